"""The RR22 engine process: spu's compiled PSI modules, run on one party's input file.

Started by :func:`dataspace.privacy.psi.rr22.run_rr22` as a script (``python rr22_engine.py
CONFIG``), so it imports nothing of this package (whose imports take ~1.5 s) and nothing of
spu's Python package (which needs jax): only the two extension modules ``libspu`` (the link)
and ``libpsi`` (the protocols), loaded from spu's install folder. When the run is through it
writes the file ``config["done"]`` and exits 0; otherwise a line ``error: ...`` on stdout
and exit code 1. The caller trusts the ``done`` file, not the exit code alone. Once the link
to the peer is up it writes ``config["linked"]``, so the caller can tell a run that has
started from one still waiting for its peer; before it listens, once its own port has been
found free, it writes ``config["bound"]``, so the caller does not take another program on
that port for its engine.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

KEY_COLUMN = "k"
STOP_GRACE_SECONDS = 2.0


class SpuMissing(ImportError):
    """spu, or one of its two PSI modules, is not installed or does not load."""


def load_spu() -> tuple[Any, Any]:
    """spu's ``libspu`` and ``libpsi`` extension modules, without importing ``spu``."""
    spec = importlib.util.find_spec("spu")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise SpuMissing("RR22 needs the 'spu' package")
    folder = Path(next(iter(spec.submodule_search_locations)))
    modules = []
    for name in ("libspu", "libpsi"):
        found = sorted(folder.glob(f"{name}*.so"))
        if not found:
            raise SpuMissing(f"spu is installed but has no {name} module")
        loader = importlib.machinery.ExtensionFileLoader(name, str(found[0]))
        module_spec = importlib.util.spec_from_loader(name, loader)
        assert module_spec is not None
        module = sys.modules.get(name) or importlib.util.module_from_spec(module_spec)
        if name not in sys.modules:
            try:
                loader.exec_module(module)
            except ImportError as exc:
                raise SpuMissing(f"spu's {name} does not load ({exc})") from exc
            sys.modules[name] = module
        modules.append(module)
    return modules[0], modules[1]


def _use_tls(desc: Any, tls: Sequence[str]) -> None:
    certificate, private_key, peer_certificate = tls
    desc.enable_ssl = True
    for options in (desc.client_ssl_opts, desc.server_ssl_opts):  # references into desc
        options.cert.certificate_path = certificate
        options.cert.private_key_path = private_key
        options.verify.ca_file_path = peer_certificate
        options.verify.verify_depth = 1


def die_with_parent(parent: int) -> None:
    """SIGKILL this engine when the thread that started it is gone (Linux), so a node that
    dies does not leave its engine running; exit now if it is already gone."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        sys.exit(1)


def check_port_free(address: str) -> None:
    """Refuse, with a clear message, an own address whose port something else listens on
    (brpc reports only "what:" and its peer would wait for the whole timeout)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as brpc binds
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            reason = exc.strerror or exc
            raise OSError(
                f"{address} (this node's RR22 link address) cannot be bound: {reason}; "
                "another program may use the port (see the node limit rr22_link_ports)"
            ) from None


def execute(config: dict[str, Any]) -> None:
    """The child's work: one ``psi_execute`` over a fresh link."""
    libspu, libpsi = load_spu()  # first: the port is checked only a moment before brpc binds
    check_port_free(config["addresses"][int(config["rank"])])
    if config.get("bound"):  # the port was free just now: what listens there next is brpc
        Path(config["bound"]).write_text("bound\n", encoding="ascii")
    with contextlib.suppress(Exception):
        libspu.logging.setup_logging(libspu.logging.LogOptions(enable_console_logger=False))
    desc = libspu.link.Desc()
    desc.id = "dataspace-rr22"
    desc.recv_timeout_ms = int(config["timeout_ms"])
    # The peer's engine may start seconds later (a loaded machine): keep connecting, and
    # retry sends refused as "not connected yet", for as long as the run may take.
    desc.connect_retry_times = max(1, int(config["timeout_ms"]) // 200)
    desc.connect_retry_interval_ms = 200
    retry = desc.retry_opts
    retry.max_retry = max(3, min(100, int(config["timeout_ms"]) // 500))
    retry.retry_interval_ms = 500
    retry.retry_interval_incr_ms = 0
    retry.max_retry_interval_ms = 500
    retry.aggressive_retry = True
    for i, address in enumerate(config["addresses"]):
        desc.add_party(f"party{i}", address)
    if config["tls"] is not None:
        _use_tls(desc, config["tls"])
    context = libspu.link.create_brpc(desc, int(config["rank"]))  # returns once linked
    # create_brpc tests the link ("connect_<rank>" messages, sequence 0) and psi_execute
    # tests it again. A receiver keeps one unconsumed test message per peer and drops a
    # second, so if the faster side's second test arrived before the slower side had taken
    # the first, the slower side would wait for it until the timeout (seen: ~1 run in 60
    # on a loaded machine). Past this barrier both sides have taken the first.
    context.barrier()
    if config.get("linked"):
        Path(config["linked"]).write_text("linked\n", encoding="ascii")
    protocol = libpsi.PsiProtocolConfig(
        protocol=libpsi.PsiProtocol.PROTOCOL_RR22,
        receiver_rank=int(config["receiver_rank"]),
        broadcast_result=bool(config["broadcast"]),
    )
    try:
        libpsi.psi_execute(
            libpsi.PsiExecuteConfig(
                protocol_conf=protocol,
                input_params=libpsi.InputParams(
                    path=config["input"], selected_keys=[KEY_COLUMN], keys_unique=True
                ),
                output_params=libpsi.OutputParams(path=config["output"], disable_alignment=True),
            ),
            context,
        )
    except BaseException:
        context.stop_link()
        raise
    Path(config["done"]).write_text("done\n", encoding="ascii")  # the result stands now
    sys.stdout.flush()
    # Tear the link down (it waits for sends still in flight), but not for long: the side that
    # stops second keeps trying to tell a peer that has already exited, and brpc may abort.
    stopper = threading.Thread(target=context.stop_link, daemon=True)
    stopper.start()
    stopper.join(STOP_GRACE_SECONDS)
    os._exit(0)


if __name__ == "__main__":  # pragma: no cover - the child process of rr22.run_rr22
    # libpsi writes its run trace (this command line among it) under /tmp whatever TMPDIR
    # says: private until the caller removes it
    os.umask(0o077)
    try:
        settings = json.loads(sys.argv[1])
        die_with_parent(int(settings["parent"]))
        execute(settings)
    except Exception as exc:
        print(f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        sys.exit(1)
