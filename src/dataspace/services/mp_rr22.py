"""The RR22 engine of multi-party PSI jobs: what the initiator and a participant share.

The job is the DH-PSI job (:mod:`.multiparty`, :mod:`.mp_party`): the same agreements,
admission, steps, metering and ledger. Only the protocol in the middle differs: instead of
blinded points carried by signed steps, the two nodes run :func:`run_rr22_hex` over a direct TCP
link (spu's), mutual TLS with a fresh self-signed certificate per side and session. Each side's
certificate and address travel in the signed steps ("open" answer, "rr22" request), so the
link accepts exactly the node that signed them. The initiator is rank 0 and the receiver; the
participant is rank 1, the sender, and learns the intersection too in modes both and align
(``broadcast``).
"""

from __future__ import annotations

import errno
import functools
import random
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataspace.errors import UsageError
from dataspace.privacy.psi import KeySpec, rr22_available
from dataspace.privacy.psi.columnar import encode_hex
from dataspace.privacy.psi.errors import PsiEngineFailed, PsiUnavailable
from dataspace.privacy.psi.rr22 import INSTALL_HINT, TlsIdentity, run_rr22_hex
from dataspace.scratch import RR22_PREFIX, process_tag
from dataspace.services import space
from dataspace.services.mp_wire import MultipartyFailed
from dataspace.services.node import Node

__all__ = [
    "ENGINES",
    "Endpoint",
    "Input",
    "Run",
    "check_address",
    "check_engine",
    "positions",
    "wait_listening",
]

ENGINES = ("dh", "rr22")
#: How long closing a run waits for its stopped engine to be killed and reaped.
STOP_WAIT_SECONDS = 5.0


def check_engine(engine: str, mode: str) -> None:
    """Refuse what the rr22 engine cannot do here (before anything is sent or admitted)."""
    if engine not in ENGINES:
        raise UsageError(f"unknown PSI engine {engine!r}", hint="engines: " + ", ".join(ENGINES))
    if engine != "rr22":
        return
    if mode == "size":
        raise UsageError(
            "mode size is not available with the rr22 engine: RR22 gives its receiver the "
            "intersection's elements, not only their number",
            hint="for the size alone use the DH engine (--engine dh)",
        )
    if not rr22_available():
        raise PsiUnavailable("the rr22 engine needs spu, which is not installed", hint=INSTALL_HINT)


@dataclass
class Endpoint:
    """One side's end of an RR22 link for one session: a private folder holding a fresh
    certificate and key, and the address (this node's host, a free port) it listens on."""

    folder: Path
    certificate: Path
    private_key: Path
    address: str
    port: int = 0
    closed: bool = False

    @classmethod
    def create(cls, node: Node) -> Endpoint:
        folder = Path(tempfile.mkdtemp(prefix=_scratch_prefix(), dir=scratch(node)))  # 0700
        try:
            certificate, private_key = TlsIdentity.create(folder, "self")
            host = own_host(node)
            address = f"[{host}]" if ":" in host else host
            port = free_port(host, link_ports(node.limits.rr22_link_ports))
            return cls(folder, certificate, private_key, f"{address}:{port}", port)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    @property
    def pem(self) -> bytes:
        return self.certificate.read_bytes()

    def tls(self, peer_pem: bytes) -> TlsIdentity:
        """The link's mutual TLS: this side's identity, accepting only ``peer_pem``."""
        if b"-----BEGIN CERTIFICATE-----" not in peer_pem or len(peer_pem) > 16_384:
            raise UsageError("the peer's RR22 link certificate is not a PEM certificate")
        peer = self.folder / "peer.crt"
        peer.write_bytes(peer_pem)
        return TlsIdentity(self.certificate, self.private_key, peer)

    def close(self) -> None:
        """Wipe the folder (certificate, private key, the peer's certificate); the port may
        be handed out again."""
        with _PORTS_LOCK:
            if self.closed:  # once: the port may belong to another link by now
                return
            self.closed = True
            _PORTS_IN_USE.discard(self.port)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scratch(node: Node) -> Path:
    """Where this node's RR22 links and runs keep their files (certificates, keys, the
    engine's input and output): under the node's own tmp dir, not the machine's."""
    folder = node.tmp_dir / "rr22"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def _scratch_prefix() -> str:
    return f"{RR22_PREFIX}{process_tag()}-"  # swept by open_node once this process is gone


def own_host(node: Node) -> str:
    """The host this node is reachable at: that of its URL on the membership list."""
    host = urlparse(space.self_member(node).url).hostname
    if not host:
        raise UsageError(f"{node.name}'s URL on the membership list has no host")
    return host


def check_address(address: object) -> str:
    """A peer's link address as sent in a signed step: ``host:port``."""
    text = str(address or "")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or len(text) > 300:
        raise UsageError(f"the peer's RR22 link address {text[:60]!r} is not host:port")
    return text


_PORTS_IN_USE: set[int] = set()
_PORTS_LOCK = threading.Lock()


def link_ports(text: str) -> range:
    """The node's RR22 port range, ``FIRST-LAST`` (limit ``rr22_link_ports``)."""
    first, _, last = str(text).partition("-")
    if not (first.strip().isdigit() and last.strip().isdigit()):
        raise UsageError(
            f"limit rr22_link_ports {text!r} is not FIRST-LAST", hint="e.g. 20000-32767"
        )
    ports = range(int(first), int(last) + 1)
    if not ports or ports.start < 1024 or ports.stop > 65536:
        raise UsageError(
            f"limit rr22_link_ports {text!r} is not a range within 1024-65535",
            hint="e.g. 20000-32767",
        )
    return ports


def free_port(host: str, ports: range) -> int:
    """A port from ``ports`` that binds on ``host`` now and that this node has not handed to
    another RR22 link still open (the engine binds it only a moment later). Picked at random,
    so that two nodes on one host rarely try the same one; the range should lie outside the
    kernel's ephemeral ports, which any outgoing connection may take."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for port in random.sample(ports, min(200, len(ports))):
        with _PORTS_LOCK:
            if port in _PORTS_IN_USE:
                continue
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError as exc:
                    if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                        continue  # taken (or reserved): try another
                    raise UsageError(
                        f"cannot listen on {host} for an RR22 link ({exc.strerror or exc})",
                        hint="the host of this node's URL on the membership list must be an "
                        "address of this machine",
                    ) from None
            _PORTS_IN_USE.add(port)
            return port
    raise MultipartyFailed(
        f"no free TCP port for an RR22 link on this node in {ports.start}-{ports.stop - 1}",
        hint="widen the node's limit rr22_link_ports or end other RR22 jobs",
    )


@dataclass
class Input:
    """One side's identifiers: its rows' positions in the dataset's Parquet file and each
    row's encoded key, hex-encoded (null: no valid key) — Arrow columns, not a Python object
    per row."""

    rows: np.ndarray
    hex: pa.Array

    @classmethod
    def load(cls, path: Path, spec: KeySpec, only_rows: np.ndarray | None = None) -> Input:
        names = [c.name for c in spec.columns]
        table = pq.read_table(path, columns=names)
        if only_rows is None:
            rows = np.arange(table.num_rows, dtype=np.int64)
        else:
            rows = np.asarray(only_rows, dtype=np.int64)
            table = table.take(rows)
        return cls(rows, encode_hex([table.column(n) for n in names], spec))

    @functools.cached_property
    def distinct(self) -> int:
        """How many distinct keys (nulls not counted): asked up to three times per run, a
        hash pass over the column each."""
        return int(pc.count_distinct(self.hex).as_py())


def positions(source: Input, keys: pa.Array, mode: str) -> np.ndarray:
    """The positions of the rows whose key is in ``keys`` (hex): every such row, ascending
    (modes me, both); for align one row per key — its first — ordered by the key's bytes
    (hex keeps their order), the order both nodes share, as they hold the same keys."""
    found = pc.fill_null(pc.is_in(source.hex, value_set=keys.cast(pa.large_string())), False)
    index = np.flatnonzero(found.to_numpy(zero_copy_only=False))
    if mode != "align":
        return source.rows[index]
    matched = pa.table({"key": source.hex.take(pa.array(index)), "at": pa.array(index)})
    first = matched.group_by("key", use_threads=False).aggregate([("at", "min")])
    ordered = np.asarray(first.sort_by("key").column("at_min"), dtype=np.int64)
    return np.asarray(source.rows[ordered], dtype=np.int64)


def wait_listening(address: str, timeout: float, alive: Callable[[], bool]) -> None:
    """Return once ``address`` accepts TCP connections: this side's engine listens. spu's link
    needs rank 0 listening before rank 1 starts (rank 1 does not wait for a late rank 0)."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while alive():
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
    if alive():
        raise PsiEngineFailed(f"the RR22 engine did not start listening within {timeout:g} s")


@dataclass
class Run:
    """One side's RR22 run in a background thread: the initiator's (rank 0, the receiver) or a
    participant's (rank 1, the sender)."""

    endpoint: Endpoint
    source: Input
    mode: str
    peer_size: int = 0
    timeout: float = 0.0
    keys: pa.Array = field(default_factory=lambda: pa.array([], pa.large_string()))
    cpu_seconds: float = 0.0  # the engine process's, for the usage record
    error: BaseException | None = None
    thread: threading.Thread | None = None
    bound: threading.Event = field(default_factory=threading.Event)  # its own port was free
    linked: threading.Event = field(default_factory=threading.Event)  # the link is up
    stopping: threading.Event = field(default_factory=threading.Event)  # kill the engine

    def start(
        self, peer_pem: bytes, peer_address: str, timeout: float, job_id: str, *, rank: int
    ) -> None:
        tls = self.endpoint.tls(peer_pem)
        self.timeout = timeout
        peer = check_address(peer_address)
        addresses = [self.endpoint.address, peer] if rank == 0 else [peer, self.endpoint.address]

        def target() -> None:
            try:
                result = run_rr22_hex(
                    self.source.hex,  # encoded once, at load, for positions() too
                    rank=rank,
                    addresses=addresses,
                    receiver_rank=0,
                    broadcast=self.mode in ("both", "align"),
                    tls=tls,
                    timeout_seconds=timeout,
                    workdir=self.endpoint.folder.parent,  # the node's RR22 scratch
                    linked=self.linked,
                    stop=self.stopping,
                    bound=self.bound,
                )
                self.keys, self.cpu_seconds = result.hex, result.cpu_seconds
            except BaseException as exc:  # kept for finish
                self.error = exc
            finally:
                self.endpoint.close()

        self.thread = threading.Thread(target=target, daemon=True, name=f"rr22-{job_id[:12]}")
        self.thread.start()

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def wait_listening(self, timeout: float) -> None:
        """Return once this side's engine accepts connections (see :func:`wait_listening`):
        after it found its port free (so a program that took the port is not taken for the
        engine); raise this side's error at once if its engine ended first."""
        deadline = time.monotonic() + timeout
        while not self.bound.wait(0.05) and self.alive and time.monotonic() < deadline:
            pass
        if self.bound.is_set():
            left = max(0.0, deadline - time.monotonic())
            wait_listening(self.endpoint.address, left, lambda: self.alive)
        if not self.alive:
            self.wait(0)  # raises this side's error
            raise PsiEngineFailed("the RR22 engine ended before it listened")
        if not self.bound.is_set():
            raise PsiEngineFailed(f"the RR22 engine did not start within {timeout:g} s")

    def wait_linked(self, timeout: float) -> None:
        """Return once the link to the peer is up; raise at once if this side's engine failed
        (its port taken, a refused certificate) or after ``timeout`` s, the engine stopped."""
        deadline = time.monotonic() + timeout
        while not self.linked.wait(0.05):
            if not self.alive and not self.linked.is_set():
                self.wait(0)  # raises this side's error
                raise PsiEngineFailed("the RR22 engine ended before its link was up")
            if time.monotonic() > deadline:
                self.stop()
                raise PsiEngineFailed(
                    f"the RR22 link to the initiator was not up within {timeout:g} s; "
                    "the engine was stopped",
                    hint="check that the nodes reach each other on their RR22 link ports "
                    "(limit rr22_link_ports), then retry",
                )

    @property
    def failure(self) -> BaseException | None:
        """This side's error, once its run has ended with one."""
        return self.error if self.thread is not None and not self.thread.is_alive() else None

    def stop(self) -> None:
        """Kill this side's engine if it still runs (the run then fails)."""
        self.stopping.set()

    def wait(self, timeout: float) -> pa.Array:
        """The keys this side learned (hex), once its run is through (at most ``timeout`` s)."""
        if self.thread is None:  # nothing to run: one side had no identifiers
            return self.keys
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise MultipartyFailed(f"the RR22 run did not finish within {timeout:g} s here")
        if isinstance(self.error, PsiEngineFailed | MultipartyFailed):
            raise self.error
        if self.error is not None:
            raise PsiEngineFailed(f"RR22 failed ({type(self.error).__name__}: {self.error})")
        return self.keys

    def close(self) -> None:
        """The engine stopped (if it still runs) and the link's folder wiped — after the
        engine is gone, so its port is not handed to another link while it still holds it."""
        self.stop()
        if self.thread is not None:
            self.thread.join(STOP_WAIT_SECONDS)  # killed within a poll (20 ms) and reaped
        self.endpoint.close()
