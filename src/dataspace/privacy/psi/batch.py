"""Batched, multi-core hashing and exponentiation.

Identifiers arrive as an iterator of pyarrow arrays / record batches; each is cut into
batches of ``batch_size`` rows, normalised, hashed and blinded in a worker process, and comes
back as one ``bytes`` of 32-byte points plus a validity mask. At most ``2 x workers`` batches
are in flight, so memory is bounded by the output (32 bytes per identifier) plus a window.

Received points are blinded in pieces of ``piece_points`` spread over the workers, and
:meth:`Engine.blind_async` returns at once, so a party can hand the pool the next chunk
before the previous one is done: the cores stay busy across chunk boundaries. The pool is
meant to be reused across jobs (:func:`shared_engine`): starting workers costs ~1 s.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from types import TracebackType
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa

from dataspace.privacy.psi.errors import PsiConfigError
from dataspace.privacy.psi.group import POINT_SIZE, group
from dataspace.privacy.psi.normalize import KeySpec, identifier_text, normalize

__all__ = ["Batch", "Engine", "shared_engine"]

Batch: TypeAlias = pa.Array | pa.ChunkedArray | pa.RecordBatch | pa.Table


def _hash_blind_task(
    group_name: str, key: bytes, prefix: bytes, spec: KeySpec, columns: list[Any]
) -> tuple[bytes, np.ndarray]:
    values = [c.to_pylist() for c in columns]
    n = len(values[0])
    valid = np.zeros(n, dtype=bool)
    items = []
    if len(values) == 1:  # one key column: encode_row without its per-row tuple
        kind = spec.columns[0].kind
        for i, value in enumerate(values[0]):
            if value is None:
                continue
            norm = normalize(identifier_text(value), kind)
            if norm is not None:
                data = norm.encode()
                items.append(len(data).to_bytes(4, "big") + data)
                valid[i] = True
    else:
        for i, row in enumerate(zip(*values, strict=True)):
            enc = spec.encode_row(row)
            if enc is not None:
                items.append(enc)
                valid[i] = True
    return group(group_name).hash_blind(key, prefix, items), valid


def _blind_task(group_name: str, key: bytes, points: bytes) -> bytes:
    return group(group_name).blind(key, points)


def _ready() -> int:
    return os.getpid()


def _columns(batch: Batch, spec: KeySpec) -> list[Any]:
    if isinstance(batch, pa.RecordBatch | pa.Table):
        missing = [c.name for c in spec.columns if c.name not in batch.schema.names]
        if missing:
            raise PsiConfigError(
                f"key column(s) {missing} not in the input", hint=f"columns: {batch.schema.names}"
            )
        return [batch.column(c.name) for c in spec.columns]
    if len(spec.columns) != 1:
        raise PsiConfigError("a composite key needs record batches or tables, not bare arrays")
    return [batch]


class Engine:
    """Runs PSI batches on a process pool sized to the cores (``workers=0``: in-process)."""

    def __init__(
        self,
        workers: int | None = None,
        *,
        executor: Executor | None = None,
        batch_size: int = 16_384,
        piece_points: int = 2_048,
    ) -> None:
        self.workers = os.cpu_count() or 1 if workers is None else workers
        self.batch_size = batch_size
        self.piece_points = piece_points
        self._own = executor is None and self.workers > 0
        self._shared = False
        self._executor: Executor | None = executor
        if self._own:
            ctx = multiprocessing.get_context("forkserver")
            self._executor = ProcessPoolExecutor(self.workers, mp_context=ctx)

    def start(self) -> Engine:
        """Start every worker now (they otherwise start on first use, ~1 s)."""
        if self._executor is not None:
            for f in [self._executor.submit(_ready) for _ in range(self.workers)]:
                f.result()
        return self

    def close(self) -> None:
        if self._own and not self._shared and self._executor is not None:
            self._executor.shutdown()
            self._executor = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _slices(self, batches: Iterable[Batch], spec: KeySpec) -> Iterator[list[Any]]:
        for batch in batches:
            cols = _columns(batch, spec)
            n = len(cols[0])
            for start in range(0, n, self.batch_size):
                yield [c.slice(start, self.batch_size) for c in cols]

    def hash_blind(
        self, group_name: str, key: bytes, prefix: bytes, spec: KeySpec, batches: Iterable[Batch]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(points as an (n, 32) uint8 array, their row numbers in the input, int64)."""
        parts: list[bytes] = []
        rows: list[np.ndarray] = []
        offset = 0
        pending: deque[tuple[int, Future[tuple[bytes, np.ndarray]]]] = deque()

        def collect(start: int, pts: bytes, valid: np.ndarray) -> None:
            parts.append(pts)
            rows.append(np.flatnonzero(valid).astype(np.int64) + start)

        for cols in self._slices(batches, spec):
            n = len(cols[0])
            if self._executor is None:
                collect(offset, *_hash_blind_task(group_name, key, prefix, spec, cols))
            else:
                fut = self._executor.submit(_hash_blind_task, group_name, key, prefix, spec, cols)
                pending.append((offset, fut))
                while len(pending) > 2 * self.workers:
                    start, done = pending.popleft()
                    collect(start, *done.result())
            offset += n
        while pending:
            start, done = pending.popleft()
            collect(start, *done.result())
        points = np.frombuffer(b"".join(parts), dtype=np.uint8).reshape(-1, POINT_SIZE)
        return points, np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)

    def blind(self, group_name: str, key: bytes, points: bytes) -> bytes:
        """Exponentiate received points, split across the workers."""
        return self.blind_async(group_name, key, points)()

    def blind_async(self, group_name: str, key: bytes, points: bytes) -> Callable[[], bytes]:
        """Start exponentiating received points; call the result to wait for them.

        The encoding is checked here, at once; a low-order point is reported when waiting.
        """
        n = len(points) // POINT_SIZE
        if self._executor is None or n < 512:
            done = group(group_name).blind(key, points)
            return lambda: done
        check = getattr(group(group_name), "check", None)
        if check is not None:
            check(points)
        step = max(self.piece_points, -(-n // (4 * self.workers))) * POINT_SIZE
        executor = self._executor
        futures = [
            executor.submit(_blind_task, group_name, key, points[i : i + step])
            for i in range(0, len(points), step)
        ]
        return lambda: b"".join(f.result() for f in futures)


_SHARED: Engine | None = None
_SHARED_LOCK = threading.Lock()


def shared_engine() -> Engine:
    """This process's reusable pool (one per process, closed at exit; ``close()`` is a no-op)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            engine = Engine()
            engine._shared = True
            atexit.register(_close_shared)
            _SHARED = engine
        return _SHARED


def _close_shared() -> None:
    global _SHARED
    with _SHARED_LOCK:
        engine, _SHARED = _SHARED, None
    if engine is not None and engine._executor is not None:
        engine._executor.shutdown(cancel_futures=True)
        engine._executor = None
