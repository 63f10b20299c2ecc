"""Per-agreement pseudonyms for transferred rows.

A pseudonym is ``HMAC-SHA256(K_a, normalise(value))`` in lower-case hex, where the agreement
key ``K_a = HKDF-SHA256(ikm=node secret, salt=None, info=INFO_PREFIX + agreement id)``. The
node secret is 32 random bytes in ``keys/pseudonym.key`` (mode 0600, created on first use);
it never leaves the node. Consequences (docs/transfers.md):

* the same value gets **different** pseudonyms under two agreements, so two consumers cannot
  join their extracts on them, nor with a plain or salted hash of a phone or ID number;
* the provider holds the secret and can recompute every pseudonym (re-identification is
  possible for it, by design: pseudonymized data stays personal information under PIPL);
* within one agreement the mapping is stable, so repeated transfers can be joined.

Only the primitives from ``cryptography`` / ``hmac``; no home-made crypto.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dataspace.errors import DataspaceError
from dataspace.privacy.psi.normalize import normalize as psi_normalize
from dataspace.scratch import ALIVE_DIR, STAGING_PREFIX, fsync_path, staging_path, sweep

__all__ = [
    "INFO_PREFIX",
    "KEY_FILE",
    "agreement_key",
    "hmac_hex",
    "load_or_create_secret",
    "normalise",
    "pseudonym",
    "pseudonymize_table",
]

KEY_FILE = Path("keys") / "pseudonym.key"
SECRET_BYTES = 32
#: domain separation: a key derived for pseudonyms is never the key of anything else
INFO_PREFIX = b"dataspace/pseudonym/v1\n"


def load_or_create_secret(root: Path) -> bytes:
    """The node's pseudonym secret (``root/keys/pseudonym.key``), created on first use with
    mode 0600. The secret is written whole to a staging file and linked into place, so the
    key file is never seen empty or short, and two processes creating it at once agree on
    the one that was linked first."""
    path = root / KEY_FILE
    path.parent.mkdir(mode=0o700, exist_ok=True)
    if not path.exists():
        # what a process killed while staging left (judged by the node's lock files)
        sweep(path.parent, STAGING_PREFIX, root / "tmp" / ALIVE_DIR)
        staged = staging_path(path)
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(SECRET_BYTES))
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(staged, path)
            except FileExistsError:  # another process linked first
                pass
            except OSError:  # a file system without hard links: the secret is whole by now
                with contextlib.suppress(FileExistsError):
                    _create_whole(path, staged.read_bytes())
        finally:
            os.unlink(staged)
        fsync_path(path.parent)
    data = path.read_bytes()
    if len(data) != SECRET_BYTES:
        raise DataspaceError(
            f"{path} is not a {SECRET_BYTES}-byte pseudonym secret",
            hint="restore it from backup; a new secret changes every pseudonym",
        )
    return data


def _create_whole(path: Path, secret: bytes) -> None:
    """Create ``path`` holding ``secret`` (FileExistsError if it exists): for file systems
    without hard links, where a reader may briefly see it short."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(secret)
        out.flush()
        os.fsync(out.fileno())


def agreement_key(secret: bytes, agreement_id: str) -> bytes:
    """HKDF-SHA256 of the node secret with the agreement id as info: 32 bytes."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=INFO_PREFIX + agreement_id.encode("utf-8"),
    ).derive(secret)


def hmac_hex(key: bytes, data: bytes) -> str:
    """HMAC-SHA256 in lower-case hex (the primitive; RFC 4231 vectors pin it)."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


#: Column categories whose values are written several ways, and the identifier kind (the
#: PSI's normalisation) that folds them: +86 138 0013 8000 and 13800138000 are one phone.
CANONICAL_KINDS = {"mobile_cn": "phone", "id_card_cn": "id_card", "uscc": "uscc",
                   "bank_card": "uscc", "vehicle_plate_cn": "uscc", "email": "email",
                   "passport": "uscc"}  # fmt: skip


def normalise(value: Any, category: str | None = None) -> bytes | None:
    """The bytes a value is pseudonymized as; None stays None.

    Text of a category in :data:`CANONICAL_KINDS` is first folded as that identifier (spaces,
    dashes, a +86 prefix dropped). Then text: Unicode NFKC (full-width digits become ASCII),
    surrounding whitespace removed, case-folded (``…X`` and ``…x`` in an ID number are one
    value). Integers and decimals: their plain decimal form; floats: ``repr``; dates: ISO
    8601; bytes as they are. A value already in its plain form gives the same bytes with or
    without a category, so pseudonyms made before categories were used stay the same.
    """
    if value is None:
        return None
    kind = CANONICAL_KINDS.get(category or "")
    if kind is not None and isinstance(value, str):
        value = psi_normalize(value, kind) or value
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | Decimal):
        text = format(value, "f") if isinstance(value, Decimal) else str(value)
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, datetime | date):
        text = value.isoformat()
    else:
        text = str(value)
    return unicodedata.normalize("NFKC", text).strip().casefold().encode("utf-8")


def pseudonym(key: bytes, value: Any, category: str | None = None) -> str | None:
    data = normalise(value, category)
    return None if data is None else hmac_hex(key, data)


def _column(key: bytes, values: Iterable[Any], category: str | None) -> pa.Array:
    # One Arrow column has one type, so equal values normalise alike: cache per value.
    cache: dict[Any, str | None] = {}
    out: list[str | None] = []
    for value in values:
        if value not in cache:
            cache[value] = pseudonym(key, value, category)
        out.append(cache[value])
    return pa.array(out, type=pa.string())


def pseudonymize_table(
    table: pa.Table | pa.RecordBatch, columns: Iterable[str] | Mapping[str, str | None],
    key: bytes,
) -> pa.Table:
    """``table`` with each of ``columns`` replaced by its pseudonyms (strings; nulls stay
    null); every other column untouched. A mapping gives each column's category, which
    decides how its values are folded first (:func:`normalise`)."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    targets = dict(columns) if isinstance(columns, Mapping) else dict.fromkeys(columns)
    arrays, fields = [], []
    for name in table.column_names:
        col = table.column(name)
        if name in targets:
            arrays.append(_column(key, col.to_pylist(), targets[name]))
            fields.append(pa.field(name, pa.string()))
        else:
            arrays.append(col)
            fields.append(table.schema.field(name))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))
