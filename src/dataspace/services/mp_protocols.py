"""Further protocols on the multi-party step endpoint (``POST /peer/v1/mp/step``).

:mod:`.mp_party` runs PSI and secure aggregation itself. Another protocol registers a handler
here under a name; a step frame whose header says ``"protocol": <name>`` is handed to that
handler (same signed caller, same frame format, same error envelope) instead::

    register("federated-train", handle)      # handle(node, caller, header, blobs, body) -> bytes

:func:`dispatch` is the one call :func:`.mp_party.handle_step` makes first; it returns ``None``
for frames of the built-in kinds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from dataspace.services import mp_store
from dataspace.services.mp_wire import unpack_frame
from dataspace.services.node import Node

Handler = Callable[[Node, str, dict[str, Any], list[bytes], bytes], bytes]

_HANDLERS: dict[str, Handler] = {}
_SESSION_REGISTRIES: list[tuple[dict[str, Any], threading.Lock]] = []


def register(protocol: str, handler: Handler) -> None:
    _HANDLERS[protocol] = handler


def register_sessions(sessions: dict[str, Any], registry: threading.Lock) -> None:
    """A protocol's running sessions (each with ``initiator`` and ``last_seen``), guarded by
    ``registry``: an initiator's keep-alive reaches them too."""
    _SESSION_REGISTRIES.append((sessions, registry))


def session_registries() -> list[tuple[dict[str, Any], threading.Lock]]:
    """The registries of the protocols loaded in this process (only they can hold sessions)."""
    return list(_SESSION_REGISTRIES)


def dispatch(node: Node, caller: str, body: bytes) -> bytes | None:
    """The answer frame when the frame names a registered protocol, else ``None``."""
    if not _HANDLERS:
        _load()
    header, blobs = unpack_frame(body)
    handler = _HANDLERS.get(str(header.get("protocol", "")))
    if handler is None:
        return None
    answer = handler(node, caller, header, blobs, body)
    if str(header.get("name", "")) not in mp_store.NOT_ENGAGING and header.get("job_id"):
        # answered a step past the opening: what it computed leaves for the initiator now
        mp_store.mark_engaged(node, str(header["job_id"]), caller)
    return answer


def _load() -> None:
    """Import the modules that register protocols (kept lazy: they import heavy cores)."""
    from dataspace.services import train_party  # noqa: F401  (registers "federated-train")
