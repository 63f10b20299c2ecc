"""A user ends a transfer this node takes part in, as provider or as consumer.

The provider revokes a grant it gave (the extract is deleted, so the one-time token pulls
nothing any more); the consumer cancels a request it no longer wants. Either way the process is
TERMINATED here with the user's reason, logged (``transfer.terminated``), and the peer is sent a
``TransferTerminationMessage``. A pull already streaming when the provider ends the transfer
runs to its end and is metered as usual: the bytes have left.
"""

from __future__ import annotations

from typing import Any

from dataspace.contracts import store as cs
from dataspace.errors import Conflict, Forbidden, UsageError
from dataspace.services.catalog import Transport
from dataspace.services.node import Node
from dataspace.services.transfer_common import FINAL, terminate
from dataspace.services.transfer_views import show_transfer

MAX_REASON = 500
CODE = "ended_by_user"


def end_transfer(
    node: Node,
    pid: str,
    *,
    reason: str,
    actor: str,
    role: str | None = None,
    transport: Transport | None = None,
) -> dict[str, Any]:
    """Terminate transfer ``pid`` with ``reason``; ``role`` is the caller's API role (None for
    the local CLI): a provider token ends only this node's provider transfers, a consumer
    token only its consumer transfers, an admin token either."""
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON:
        raise UsageError(
            f"a termination needs a reason of 1 to {MAX_REASON} characters",
            hint="say why, e.g. --reason 'agreement under review'",
        )
    with node.store.read() as session:
        row = cs.get_transfer(session, pid, peer=None)
        if role not in (None, "admin", row.role):
            raise Forbidden(
                f"transfer {pid!r} is one this node takes part in as {row.role}; "
                f"a {role} token cannot end it",
                hint=f"use an admin or {row.role} token",
            )
        if row.state in FINAL:
            raise Conflict(
                f"transfer {pid!r} is already {row.state}",
                hint="only a REQUESTED, STARTED or SUSPENDED transfer can be ended",
            )
    terminate(node, pid, code=CODE, reasons=[reason], actor=actor, transport=transport)
    view = show_transfer(node, pid)
    if view["state"] != "TERMINATED":  # it completed meanwhile
        raise Conflict(
            f"transfer {pid!r} became {view['state']} before it could be ended",
            hint="the data had already arrived",
        )
    return view
