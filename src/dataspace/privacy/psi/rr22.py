"""Optional fast path: RR22 (Raghuraman & Rindal 2022, VOLE-based OPRF PSI) through ``spu``.

``spu`` (SecretFlow) is an optional extra: it pins numpy < 2 and pulls in jax, so it is not
installed by default. Without it :func:`run_rr22` raises :class:`PsiUnavailable` with the
install hint; :func:`rr22_available` says which. Identifiers are normalised and key-encoded
exactly as for DH-PSI, then handed to ``spu.psi.mem_psi`` with ``PsiType RR22_PSI_2PC`` over
spu's own link (one instance per party, ``rank`` 0 or 1, ``addresses`` of both parties).
The result goes to ``receiver_rank`` only unless ``broadcast`` (mode "both").
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable, Sequence
from typing import Any

from dataspace.privacy.psi.errors import PsiUnavailable
from dataspace.privacy.psi.normalize import KeySpec

__all__ = ["INSTALL_HINT", "rr22_available", "run_rr22"]

INSTALL_HINT = "install the optional extra: pip install -e '.[spu]' (Python 3.11, numpy<2)"


def rr22_available() -> bool:
    """True when ``spu.psi`` can be imported."""
    try:
        return importlib.util.find_spec("spu") is not None and _spu() is not None
    except PsiUnavailable:
        return False


def _spu() -> tuple[Any, Any]:
    try:
        psi = importlib.import_module("spu.psi")
        link = importlib.import_module("spu.libspu.link")
    except ImportError as exc:
        raise PsiUnavailable(f"RR22 needs the 'spu' package ({exc})", hint=INSTALL_HINT) from exc
    return psi, link


def run_rr22(
    rows: Iterable[Sequence[object]],
    spec: KeySpec | str,
    *,
    rank: int,
    addresses: Sequence[str],
    receiver_rank: int = 0,
    broadcast: bool = False,
) -> list[bytes]:
    """This party's side of an RR22 run; returns the intersecting encoded keys it learns."""
    psi, link = _spu()
    key = KeySpec.parse(spec) if isinstance(spec, str) else spec
    items = [enc.hex() for row in rows if (enc := key.encode_row(row)) is not None]
    desc = link.Desc()
    for i, address in enumerate(addresses):
        desc.add_party(f"party{i}", address)
    ctx = link.create_brpc(desc, rank)
    try:
        config = psi.MemoryPsiConfig(
            psi_type=psi.PsiType.Value("RR22_PSI_2PC"),
            receiver_rank=receiver_rank,
            broadcast_result=broadcast,
        )
        return [bytes.fromhex(x) for x in psi.mem_psi(ctx, config, items)]
    finally:
        ctx.stop_link()
