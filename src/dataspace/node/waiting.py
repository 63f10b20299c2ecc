"""Requests that wait for a peer (``wait_seconds`` of a contract request, ``wait`` of a
transfer) hold one of the server's worker threads while they wait. Only
:data:`MAX_WAITING` may wait at once: a caller past them gets its answer at once, in the
state it has then, and polls; the other routes (``/health`` included) keep their threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

MAX_WAITING = 8  # of the threadpool's 40 worker threads

_slots = threading.BoundedSemaphore(MAX_WAITING)


def wait_if_free(view: dict[str, Any], wait: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``wait()``'s answer if a slot is free, else ``view`` as it is now (the caller polls)."""
    with waiting_slot() as may_wait:
        return wait() if may_wait else view


@contextmanager
def waiting_slot() -> Iterator[bool]:
    """True while the caller holds a slot and may wait; False if all are taken (answer now)."""
    held = _slots.acquire(blocking=False)
    try:
        yield held
    finally:
        if held:
            _slots.release()
