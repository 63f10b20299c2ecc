"""Optional fast path: RR22 (Raghuraman & Rindal 2022, VOLE-based OPRF PSI) through ``spu``.

``spu`` (SecretFlow, Apache-2.0) declares numpy < 2 and jax for its compiler front end; its
PSI engine is two compiled modules, ``libspu`` (the network link) and ``libpsi`` (the
protocols), with no Python dependencies. They are loaded here on their own, without
importing the ``spu`` package, so spu installed with ``--no-deps`` (``make spu``) runs beside
this project's numpy 2. Without it :func:`run_rr22` raises :class:`PsiUnavailable` with the
install hint; :func:`rr22_available` says which.

Identifiers are normalised and key-encoded exactly as for DH-PSI (over whole Arrow columns,
:mod:`.columnar`), de-duplicated, written hex-encoded to a private temp CSV, and handed to
``libpsi.psi_execute`` with ``PROTOCOL_RR22`` over spu's own link (brpc over TCP, one
instance per party, ``rank`` 0 or 1, ``addresses`` of both). The intersection goes to
``receiver_rank`` only unless ``broadcast``. The library runs in a child process
(:mod:`.rr22_engine`, started as a script): a crash in it cannot take the caller down, and
the caller kills it at ``timeout_seconds`` (a peer that never connects, a refused
certificate) or when its ``stop`` event is set; its ``bound`` event is set once it found its
own port free (it listens there a moment later), its ``linked`` event once the link to the
peer is up.

With ``tls`` the link is mutual TLS: each party presents its own certificate and accepts
only the peer's (exchanged beforehand over an authenticated channel), so nobody else can
join or read the link.

Threat model (spu's): semi-honest parties; the receiver learns the intersection, the sender
nothing but the receiver's set size.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from dataspace.privacy.psi import rr22_engine
from dataspace.privacy.psi.columnar import encode_hex
from dataspace.privacy.psi.errors import PsiConfigError, PsiEngineFailed, PsiUnavailable
from dataspace.privacy.psi.normalize import KeySpec, identifier_text
from dataspace.scratch import RR22_PREFIX, process_tag, remove_libpsi_traces

__all__ = [
    "INSTALL_HINT",
    "Rr22Result",
    "TlsIdentity",
    "rr22_available",
    "run_rr22",
    "run_rr22_hex",
]

INSTALL_HINT = "install spu without its front-end dependencies: make spu"
KEY_COLUMN = rr22_engine.KEY_COLUMN


def rr22_available() -> bool:
    """True when spu's compiled PSI modules can be loaded."""
    try:
        _spu()
    except PsiUnavailable:
        return False
    return True


@functools.cache
def _spu() -> tuple[Any, Any]:
    try:
        return rr22_engine.load_spu()
    except rr22_engine.SpuMissing as exc:
        raise PsiUnavailable(str(exc), hint=INSTALL_HINT) from None


@dataclass(frozen=True)
class Rr22Result:
    """What one side learned — the intersection's encoded keys, hex-encoded (``hex``; empty
    for the sender unless broadcast) — and the CPU its engine process used (for the usage
    record)."""

    hex: pa.Array
    cpu_seconds: float

    @property
    def keys(self) -> list[bytes]:
        """The encoded keys as bytes (one Python object each: for small results)."""
        return [bytes.fromhex(h) for h in self.hex.to_pylist()]


@dataclass(frozen=True)
class TlsIdentity:
    """One party's link certificate and key (PEM files), and the peer's certificate."""

    certificate: Path
    private_key: Path
    peer_certificate: Path

    @staticmethod
    def create(folder: Path, name: str) -> tuple[Path, Path]:
        """A fresh self-signed P-256 certificate for one run: (certificate, key) in ``folder``."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        return cert_path, key_path


def run_rr22(rows: Iterable[Sequence[object]], spec: KeySpec | str, **kw: Any) -> Rr22Result:
    """This party's side of an RR22 run over its rows' key values (tuples, in ``spec``'s
    column order); ``kw`` as for :func:`run_rr22_hex`."""
    key = KeySpec.parse(spec) if isinstance(spec, str) else spec
    columns = list(zip(*rows, strict=True)) or [() for _ in key.columns]
    return run_rr22_hex(encode_hex([_column(c) for c in columns], key), **kw)


def _column(values: Sequence[object]) -> pa.Array:
    """Python values as an Arrow column that encodes as ``encode_row`` does: strings as
    strings, ints (not bools) within int64 as int64, anything else — or a mix — as the
    ``identifier_text`` of each value (Arrow's own inference would print 1 as "1.0" beside a
    float)."""
    present = [v for v in values if v is not None]
    if all(type(v) is str for v in present):
        return pa.array(values, pa.large_string())
    if all(type(v) is int and -(2**63) <= v < 2**63 for v in present):
        return pa.array(values, pa.int64())
    return pa.array([None if v is None else identifier_text(v) for v in values], pa.large_string())


def run_rr22_hex(
    keys: pa.Array | pa.ChunkedArray,
    *,
    rank: int,
    addresses: Sequence[str],
    receiver_rank: int = 0,
    broadcast: bool = False,
    tls: TlsIdentity | None = None,
    timeout_seconds: float = 300.0,
    workdir: str | os.PathLike[str] | None = None,
    linked: threading.Event | None = None,
    stop: threading.Event | None = None,
    bound: threading.Event | None = None,
) -> Rr22Result:
    """This party's side of an RR22 run over its encoded keys, hex-encoded
    (:func:`.columnar.encode_hex`; null: a row without a valid key): the intersection it
    learns (empty for the sender unless ``broadcast``) and its engine's CPU seconds.
    ``bound`` is set once the engine found its own port free (it listens there a moment later),
    ``linked`` once the link to the peer is up; setting ``stop`` kills the engine (the run then
    fails)."""
    _spu()  # fail early, with the install hint
    if rank not in (0, 1) or len(addresses) != 2 or receiver_rank not in (0, 1):
        raise PsiConfigError("RR22 runs between exactly two parties, ranks 0 and 1")
    with tempfile.TemporaryDirectory(prefix=f"{RR22_PREFIX}{process_tag()}-", dir=workdir) as tmp:
        folder = Path(tmp)
        source, output = folder / "in.csv", folder / "out.csv"
        config: dict[str, Any] = {
            "rank": rank,
            "addresses": list(addresses),
            "receiver_rank": receiver_rank,
            "broadcast": broadcast,
            "timeout_ms": int(timeout_seconds * 1000),
            "input": str(source),
            "output": str(output),
            "done": str(folder / "done"),
            "linked": str(folder / "linked"),
            "bound": str(folder / "bound"),
            "tls": None if tls is None else [str(p) for p in astuple(tls)],
            "parent": os.getpid(),
        }
        count = _write_keys(source, keys)
        log = folder / "engine.log"
        with log.open("wb") as sink:
            child = subprocess.Popen(  # a script, not -m: no package import (~1.5 s)
                [sys.executable, rr22_engine.__file__, json.dumps(config)],
                # libpsi writes its working files (the sorted keys, the intersection's row
                # numbers) under TMPDIR, world-readable, and leaves them: here they land in
                # this run's private folder, removed with it
                env={**os.environ, "TMPDIR": str(folder)},
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
            markers = [(folder / "bound", bound), (folder / "linked", linked)]
            try:
                code, cpu = _reap(child, timeout_seconds, markers, stop)
            except BaseException:  # interrupted while waiting: the engine must not run on
                child.kill()
                child.wait()
                raise
            finally:
                remove_libpsi_traces(folder)  # written at the run's end, under /tmp
        if code is None and stop is not None and stop.is_set():
            raise PsiEngineFailed("RR22 was stopped before it finished")
        if code is None:
            raise PsiEngineFailed(
                f"RR22 did not finish within {timeout_seconds:g} s (peer unreachable, "
                "refused certificate, or a stalled run); the engine was stopped",
                hint="check the peer's address and certificate, then retry",
            )
        if not (folder / "done").exists():  # the engine writes it once its run is through
            if code == -signal.SIGKILL:  # the log ends wherever the engine was
                raise PsiEngineFailed(
                    "RR22 failed: the engine was killed (SIGKILL)",
                    hint="see this machine's log for what killed it (memory?), then retry",
                )
            if code < 0:  # a crash: its last words, if any, say why
                name = signal.Signals(-code).name if -code in signal.valid_signals() else -code
                raise PsiEngineFailed(f"RR22 failed: the engine died ({name}): {_last_error(log)}")
            raise PsiEngineFailed(f"RR22 failed: {_last_error(log)}")
        if count == 0 or not (broadcast or rank == receiver_rank) or not output.exists():
            return Rr22Result(pa.array([], pa.large_string()), cpu)
        return Rr22Result(_read_keys(output), cpu)


def _reap(
    child: subprocess.Popen[bytes],
    timeout: float,
    markers: Sequence[tuple[Path, threading.Event | None]],
    stop: threading.Event | None,
) -> tuple[int | None, float]:
    """Wait for the engine (killed at ``timeout`` or on ``stop``): its exit code (None if
    killed) and CPU; each event is set once the engine has written its marker file."""
    deadline = time.monotonic() + timeout
    killed = False
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        for marker, event in markers:
            if event is not None and not event.is_set() and marker.exists():
                event.set()
        if pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            cpu = usage.ru_utime + usage.ru_stime
            return (None if killed else child.returncode), cpu
        if not killed and (time.monotonic() > deadline or (stop is not None and stop.is_set())):
            child.kill()
            killed = True
        time.sleep(0.02)


def _write_keys(path: Path, keys: pa.Array | pa.ChunkedArray) -> int:
    """The distinct keys as one column of hex (no quoting: hex needs none); returns how
    many."""
    distinct = pc.unique(pc.drop_null(keys)).cast(pa.large_string())
    pacsv.write_csv(
        pa.table({KEY_COLUMN: distinct}),
        path,
        pacsv.WriteOptions(include_header=True, quoting_style="none"),
    )
    return len(distinct)


def _read_keys(path: Path) -> pa.Array:
    """The engine's result file: its one column of hex keys."""
    table = pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            column_types={KEY_COLUMN: pa.large_string()}, strings_can_be_null=False
        ),
    )
    if table.num_columns != 1 or table.num_rows == 0:
        return pa.array([], pa.large_string())
    return table.column(0).combine_chunks().cast(pa.large_string())


def _last_error(log: Path) -> str:
    """The engine's last error line (its log is otherwise noise for the caller)."""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    errors = [ln for ln in lines if "error" in ln.lower() or "exception" in ln.lower()]
    return (errors or lines or ["no output"])[-1].strip()[:300]
