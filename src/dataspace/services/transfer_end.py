"""A user ends a transfer this node takes part in, as provider or as consumer.

The provider revokes a grant it gave (the extract is deleted, so the one-time token pulls
nothing any more); the consumer cancels a request it no longer wants. Either way the process is
TERMINATED here with the user's reason, logged (``transfer.terminated``), and the peer is sent a
``TransferTerminationMessage``. Once the consumer has begun its pull the provider can no longer
end the transfer (409): the data has left. A consumer may end its transfer at any time; a
download it had under way is then deleted on arrival, and billed by the provider if it went
out (see ``settle_pull``).
"""

from __future__ import annotations

from typing import Any

from dataspace.contracts import store as cs
from dataspace.errors import Conflict, Forbidden
from dataspace.services.catalog import Transport
from dataspace.services.node import Node
from dataspace.services.reasons import checked_reason
from dataspace.services.transfer_common import terminate
from dataspace.services.transfer_views import show_transfer

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
    reason = checked_reason(reason, ending="ending a transfer")
    with node.store.read() as session:
        row = cs.get_transfer(session, pid, peer=None)
        if role not in (None, "admin", row.role):
            raise Forbidden(
                f"transfer {pid!r} is one this node takes part in as {row.role}; "
                f"a {role} token cannot end it",
                hint=f"use an admin or {row.role} token",
            )
    # One locked transaction decides: a transfer that ended meanwhile, or (provider) whose
    # data has been pulled meanwhile, is refused rather than reported as ended by this user.
    if not terminate(node, pid, code=CODE, reasons=[reason], actor=actor, transport=transport,
                     unless_pulled=True):
        state = show_transfer(node, pid)["state"]
        raise Conflict(
            f"transfer {pid!r} is already {state}",
            hint="only a REQUESTED, STARTED or SUSPENDED transfer can be ended",
        )
    return show_transfer(node, pid)
