"""Asking the witnesses on schedule: a serving node has each new checkpoint cosigned.

A witness only helps a verifier if the checkpoint it is shown carries the witness's line, so a
node that names witnesses in ``node.toml`` asks them itself while it serves::

    [ledger]
    witnesses = ["tax-bureau", "regulator"]

Every ``ledger_witness_interval_seconds`` (a ``[limits]`` setting, 60 by default) the node
signs a checkpoint if its log grew and sends it to each named witness
(:func:`dataspace.services.witness.request_cosignatures`). A witness that is down or refuses
is asked again next round; the others' lines are kept. Growth made only of
``witness.cosigned`` entries (this node witnessing others) does not start a round, so two
nodes that witness each other settle instead of asking each other forever.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from dataspace.errors import DataspaceError, UsageError
from dataspace.ledger import log
from dataspace.services import witness
from dataspace.services.node import Node

logger = logging.getLogger("dataspace.node")

WITNESSING_ACTION = "witness.cosigned"
LOOK_BACK = 50  # newest entries inspected for growth that is not witnessing


def configured_witnesses(node: Node) -> list[str]:
    """The member names under ``[ledger] witnesses`` in ``node.toml`` (none: an empty list)."""
    section = node.config.get("ledger", {})
    if not isinstance(section, dict):
        raise UsageError("node.toml: [ledger] must be a table",
                         hint='write it as [ledger] with witnesses = ["member", ...]')
    names = section.get("witnesses", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise UsageError(f"node.toml: [ledger] witnesses must be a list of member names, "
                         f"got {names!r}", hint='e.g. witnesses = ["tax-bureau"]')
    if node.name in names:
        raise UsageError("node.toml: [ledger] witnesses names this node itself",
                         hint="a node cannot witness its own log; name other members")
    if len(set(names)) != len(names):
        raise UsageError(f"node.toml: [ledger] witnesses names a member twice: {names}")
    return list(names)


def grown_since(node: Node, size: int) -> bool:
    """Whether the log holds entries past ``size`` other than this node's own witnessing."""
    with node.store.read() as session:
        now = log.size(session)
        if now <= size:
            return False
        if now - size > LOOK_BACK:
            return True
        rows = log.entries(session, start=size, limit=LOOK_BACK)
    return any(row.entry.get("action") != WITNESSING_ACTION for row in rows)


class AutoWitness:
    """A daemon thread that runs :meth:`round` every ``interval`` seconds until :meth:`stop`."""

    def __init__(
        self, node: Node, witnesses: list[str], interval: float, *, post: Any = None
    ) -> None:
        if interval <= 0:
            raise UsageError(f"ledger_witness_interval_seconds must be positive, got {interval}",
                             hint="fix node.toml [limits]")
        self.node, self.witnesses, self.interval, self._post = node, witnesses, interval, post
        self.cosigned_size = 0  # the size every witness last cosigned, as far as this run knows
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="auto-witness", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            # a round in flight may wait on a witness that is down; the thread is a daemon and
            # its store transactions are atomic, so shutdown does not wait for it long
            self._thread.join(timeout=5.0)

    def round(self) -> dict[str, Any] | None:
        """Ask the witnesses if the log grew; the result of the request, or None if it did not."""
        if not grown_since(self.node, self.cosigned_size):
            return None
        result = witness.request_cosignatures(self.node, self.witnesses, post=self._post)
        failed = {name: r.get("error", "") for name, r in result["witnesses"].items()
                  if not r["cosigned"]}
        for name, why in failed.items():
            logger.warning("witness %s did not cosign size %d: %s", name, result["size"], why)
        if not failed:
            self.cosigned_size = result["size"]
            logger.info("checkpoint at size %d cosigned by %s", result["size"],
                        ", ".join(self.witnesses))
        return result

    def _loop(self) -> None:
        while not self._stopped.is_set():
            try:
                self.round()
            except DataspaceError as exc:
                logger.warning("witnessing round failed: %s", exc.message)
            except Exception:  # the server keeps serving whatever a round runs into
                logger.exception("witnessing round failed")
            self._stopped.wait(self.interval)


def start(node: Node, names: list[str]) -> AutoWitness | None:
    """Start asking ``names`` (:func:`configured_witnesses`); None if there are none."""
    if not names:
        return None
    runner = AutoWitness(node, names, float(node.limits["ledger_witness_interval_seconds"]))
    runner.start()
    return runner
