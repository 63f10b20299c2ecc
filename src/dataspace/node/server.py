"""Running the API with uvicorn: ``serve(node, host, port)`` or ``python -m dataspace.node.server``.

SIGINT and SIGTERM shut down gracefully: uvicorn stops accepting connections, lets requests in
flight finish (up to ``GRACEFUL_SECONDS``), then the node's store is closed and ``serve``
returns, so the process exits 0 instead of dying by the signal uvicorn re-raises.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import gc
import ipaddress
import logging
import os
import resource
import signal
import socket
import stat
import sys
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn

from dataspace.errors import Conflict, DataspaceError, UsageError
from dataspace.ledger import entry_budget
from dataspace.ledger import log as ledger_log
from dataspace.node.app import create_app
from dataspace.node.http_protocol import with_head_timeout
from dataspace.privacy.psi import x25519_mb
from dataspace.services import auto_witness, mp_store, transfer_backlog
from dataspace.services.job_records import orphan_results, sweep_stale
from dataspace.services.node import Node, open_node
from dataspace.settings import ENV_STOP_WITH_FD

log = logging.getLogger("dataspace.node")

GRACEFUL_SECONDS = 10
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8600


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Stop(Exception):
    """A stop signal arrived: after uvicorn's graceful shutdown, or before it was listening."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """While uvicorn runs it handles SIGINT/SIGTERM itself; on the way out it restores these
    handlers and re-raises the signal, which then ends ``serve`` normally instead of the process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_when_parent_goes(fd: int, serving: threading.Event) -> threading.Thread | None:
    """Stop this server (as SIGTERM would) once the pipe ``fd`` reaches end of file: the
    process that started it holds the write end, which closes when it exits however it
    exits (even SIGKILL), so its servers do not outlive it. Only while ``serving`` is set:
    once the server is shutting down, a SIGTERM would find the default handler back and
    kill the process in the middle of its clean-up. None (and a warning) if ``fd`` is not
    an open pipe."""
    try:
        is_pipe = stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        is_pipe = False
    if not is_pipe:
        log.warning("%s=%d is not an open pipe: ignored", ENV_STOP_WITH_FD, fd)
        return None

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 1):
                pass
        log.warning("the process that started this server is gone: stopping")
        if serving.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="stop-with-parent", daemon=True)
    thread.start()
    return thread


SERVE_LOCK = "serve.lock"  # under the node's tmp/: held by the one server of the node


@contextlib.contextmanager
def _the_only_server(node: Node) -> Iterator[None]:
    """Hold the node's serve lock while serving; a second server of the same node is refused
    (it would resume, sweep and witness alongside the first). The file stays: removing it
    would let a third server lock a new file while the second holds the old one."""
    path = node.tmp_dir / SERVE_LOCK
    try:
        node.tmp_dir.mkdir(exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise UsageError(
            f"cannot open the node's serve lock {path}: {exc.strerror}",
            hint="serve the node as the user that owns its directory (and tmp/serve.lock)",
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip()
            raise Conflict(
                f"node {node.name} is already being served"
                + (f" (process {holder})" if holder.isdigit() else ""),
                hint="stop that server first; one node has one server",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def serve(node: Node, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve ``node``'s API until SIGINT/SIGTERM; closes the node when done."""
    try:
        with _the_only_server(node):
            try:
                _serve(node, host, port)
            finally:
                node.close()  # before the lock goes: the next server finds this one done
    finally:
        node.close()  # also when the lock was refused
    log.info("node %s stopped", node.name)


def _serve(node: Node, host: str, port: int) -> None:
    witnessing: auto_witness.AutoWitness | None = None
    sweeping: transfer_backlog.SweepingThread | None = None
    try:
        witnesses = auto_witness.configured_witnesses(node)  # a bad [ledger] stops us here
        _raise_open_files_limit()
        _check_can_listen(host, port)  # a port in use stops us here too
        if not _is_loopback(host):
            log.warning("serving on %s without TLS: put the node behind a TLS-terminating proxy",
                        host)
        interrupted = sweep_stale(node)  # jobs a previous server left running end FAILED
        if interrupted:
            log.warning(
                "marked %d interrupted job(s) FAILED: %s", len(interrupted), ", ".join(interrupted)
            )
        ended = mp_store.fail_orphaned(node)  # multi-party parts whose session went with it
        if ended:
            log.warning("marked %d multi-party job(s) this node served FAILED: %s",
                        len(ended), ", ".join(ended))
        orphaned = orphan_results(node)  # results of jobs whose commit never came
        if orphaned:
            log.warning("removed %d result file(s) no job records", len(orphaned))
        # lapsed grants, interrupted deliveries, partial downloads; and, taken before the server
        # accepts anything (what it then receives is its handlers'), the requests to provide
        # and pulls to retry, and the peers to tell, once it serves
        backlog, swept = transfer_backlog.take_backlog(node)
        if swept["terminated"] or swept["removed"]:
            log.warning("ended %d transfer(s) no one would finish, removed %d file(s)",
                        len(swept["terminated"]), len(swept["removed"]))
        log.info("DH-PSI X25519: %s", x25519_mb.describe())
        config = uvicorn.Config(
            create_app(node),
            host=host,
            port=port,
            timeout_graceful_shutdown=GRACEFUL_SECONDS,
            server_header=False,
            proxy_headers=False,
            log_level="info",
            http=with_head_timeout(float(node.limits.http_head_timeout_seconds)),
        )
        witnessing = auto_witness.start(node, witnesses)
        server = uvicorn.Server(config)
        # What start-up made (modules, routes, schemas) lives as long as the server: keep it
        # out of every later collection, which then walks only what requests allocate.
        gc.collect()
        gc.freeze()
        sweeping = transfer_backlog.keep_sweeping(
            node, serving=lambda: server.started, backlog=backlog
        )
        serving = threading.Event()
        with _stop_on_signals(), contextlib.suppress(_Stop):
            serving.set()
            if os.environ.get(ENV_STOP_WITH_FD, "").isdigit():
                stop_when_parent_goes(int(os.environ[ENV_STOP_WITH_FD]), serving)
            try:
                server.run()
            finally:
                serving.clear()  # before _stop_on_signals restores the default handlers
    finally:
        if sweeping is not None:
            sweeping.stop()
        if witnessing is not None:
            witnessing.stop()
        enter_unreported_refusals(node)


def enter_unreported_refusals(node: Node) -> dict[str, int]:
    """Refusals counted past a budget that no later entry carried (the sender stopped, or
    the server stops first) go into the ledger as one ``refusals.suppressed`` entry per
    source, so the evidence of a flood is complete when the server stops."""
    counts = entry_budget.drain(str(node.root))
    if not counts:
        return counts
    try:
        with node.store.write() as session:
            for source, count in sorted(counts.items()):
                ledger_log.append(session, actor=f"node:{node.name}", action="refusals.suppressed",
                                  payload={"source": source, "suppressed": count})
    except DataspaceError:
        log.exception("could not enter %d suppressed refusal count(s) in the ledger",
                      len(counts))
    return counts


def _check_can_listen(host: str, port: int) -> None:
    """A port in use, or an address not of this machine, as a one-line error before start-up
    work, rather than the ASGI server's log lines and exit. Every address ``host`` resolves
    to is tried, as the server will bind them all; each trial socket is closed at once (the
    server binds its own)."""
    if not host:
        return  # all interfaces: the server's own bind says what is wrong
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(f"cannot listen on {host!r}: {exc}",
                         hint="pass --host an address of this machine, e.g. 127.0.0.1") from None
    for family, kind, proto, _, address in found:
        with socket.socket(family, kind, proto) as trial:
            trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                trial.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                trial.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise Conflict(f"port {port} on {host} is already in use",
                                   hint="stop what listens there, or pass --port another"
                                   ) from None
                raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                                 hint="pass --host an address of this machine and a --port "
                                 "you may use (below 1024 needs privileges)") from None


def _raise_open_files_limit() -> None:
    """Every connection holds a descriptor: take the hard limit the system allows, not the
    soft default (often 1024), before running out of them stops the server accepting."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(soft, 65536) if hard == resource.RLIM_INFINITY else hard
    if wanted > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dataspace.node.server", description="Serve a dataspace node's HTTP API."
    )
    parser.add_argument("--node", default=None, help="node directory (default: $DATASPACE_NODE)")
    parser.add_argument("--host", default=None, help="address to bind (default: node.toml)")
    parser.add_argument("--port", type=int, default=None, help="port (default: node.toml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    try:
        node = open_node(args.node)
    except DataspaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    server_cfg = node.config.get("server", {})
    host = args.host or str(server_cfg.get("host", DEFAULT_HOST))
    port = args.port if args.port is not None else int(server_cfg.get("port", DEFAULT_PORT))
    try:
        serve(node, host, port)
    except DataspaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
