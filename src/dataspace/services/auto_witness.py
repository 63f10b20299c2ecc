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
from dataspace.ledger.checkpoint import peek_checkpoint
from dataspace.services import ledger, witness
from dataspace.services.node import Node

logger = logging.getLogger("dataspace.node")

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
    return any(row.entry.get("action") != witness.COSIGNED_ACTION for row in rows)


class AutoWitness:
    """A daemon thread that runs :meth:`round` every ``interval`` seconds until :meth:`stop`."""

    def __init__(
        self, node: Node, witnesses: list[str], interval: float, *, post: Any = None
    ) -> None:
        if interval <= 0:
            raise UsageError(f"ledger_witness_interval_seconds must be positive, got {interval}",
                             hint="fix node.toml [limits]")
        self.node, self.witnesses, self.interval, self._post = node, witnesses, interval, post
        self.cosigned: dict[str, int] = {}  # per witness, the size it last cosigned in this run
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="auto-witness", daemon=True)

    @property
    def cosigned_size(self) -> int:
        """The size every witness has cosigned (as far as this run knows)."""
        return min((self.cosigned.get(w, 0) for w in self.witnesses), default=0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            # a round stops between witnesses; one in flight may wait on a witness that is
            # down (30 s). The thread is a daemon and its store transactions are atomic, so
            # shutdown does not wait for that long.
            self._thread.join(timeout=5.0)

    def round(self) -> dict[str, Any] | None:
        """When some witness has not cosigned the log's real growth (not only witnessing
        entries): sign one checkpoint and ask every witness not yet on it. None if none is
        behind. A witness that cosigned is not asked again until the log really grows, so one
        that is down does not make the others log a cosignature every round."""
        behind = [w for w in self.witnesses if grown_since(self.node, self.cosigned.get(w, 0))]
        if not behind:
            return None
        # one checkpoint for the round: the witnesses' lines land on the same note even if
        # the log grows meanwhile (another node's witness request logs here)
        note = ledger.checkpoint(self.node)
        size, answers = peek_checkpoint(note).size, {}
        # every witness not yet on this note, so the round's checkpoint carries all their lines
        for name in [w for w in self.witnesses if self.cosigned.get(w) != size]:
            if self._stopped.is_set():
                break
            try:
                result = witness.request_cosignatures(self.node, [name], post=self._post,
                                                      note=note)
                answers[name] = result["witnesses"][name]
            except DataspaceError as exc:  # e.g. no longer a member: the others still go
                answers[name] = {"cosigned": False, "error": exc.message}
            if answers[name]["cosigned"]:
                self.cosigned[name] = size
            else:
                logger.warning("witness %s did not cosign size %d: %s", name, size,
                               answers[name].get("error", ""))
        if answers and all(a["cosigned"] for a in answers.values()):
            logger.info("checkpoint at size %d cosigned by %s", size, ", ".join(answers))
        return {"size": size, "witnesses": answers}

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
    try:  # a warning, not a refusal: membership lists change while node.toml stays
        witness.check_members(node, names)
    except UsageError as exc:
        logger.warning("node.toml [ledger] witnesses: %s (%s); each round asks them anyway",
                       exc.message, exc.hint)
    runner = AutoWitness(node, names, float(node.limits["ledger_witness_interval_seconds"]))
    runner.start()
    return runner
