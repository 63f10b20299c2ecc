"""PSI throughput: our DH-PSI (X25519, byte messages, process pool) vs openmined-psi.

    .venv/bin/python bench/psi.py                            # 100k x 100k, 50% overlap
    .venv/bin/python bench/psi.py --sizes 1000000 --repeat 1  # 1M x 1M
    .venv/bin/python bench/psi.py --openmined-max 100000      # skip openmined above 100k

"ours x25519" uses Intel's multi-buffer X25519 for each party's own hashed points where the
``ipp`` extra is installed and the CPU has AVX-512 IFMA (``make ipp``); "ours x25519/openssl"
is the same run with ``cryptography`` only (``DATASPACE_X25519=cryptography`` in its workers),
so both figures come from one invocation.

Both parties run in this process tree and really exchange the byte messages; the clock covers
the whole protocol (normalising, hashing, both blinding rounds, comparison). Records/s per
side = n / time. The process pool is started before the clock, as a node's reused pool is.
Identifiers are generated in 100k-row Arrow arrays (never n Python strings at once for our
side; openmined-psi takes Python lists, so it gets them as lists). openmined-psi (P-256,
single-threaded) runs the same way on the same identifiers. Each figure is the median of
``--repeat`` runs; the 1-minute load average is printed before and after every run (the
machine is shared), with the CPU seconds the run used in all its processes.

RR22 (``make spu``) runs when spu is installed: both parties' sides at once (each in its own
process with its own engine process, over spu's TCP link on loopback), each as a job's side
runs it: the clock covers reading its key column from a Parquet file (written beforehand),
normalising and encoding it (Arrow, :mod:`dataspace.privacy.psi.columnar`), the engine
(writing its input, reading and bucketing it, the VOLE-based OPRF, comparison, writing the
result), reading the intersection back and mapping it to the receiver's rows. Each side's
phases are printed under the run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dataspace.privacy.psi import (
    Engine,
    Initiator,
    KeySpec,
    Responder,
    rr22_available,
    run_local,
    x25519_mb,
)
from dataspace.privacy.psi.rr22 import run_rr22_hex
from dataspace.services import mp_rr22

STEP = 100_000


def ids(lo: int, hi: int) -> list[str]:
    return [f"9111{i:014d}" for i in range(lo, hi)]


def arrays(lo: int, hi: int) -> Iterator[pa.Array]:
    for start in range(lo, hi, STEP):
        yield pa.array(ids(start, min(start + STEP, hi)))


def load() -> float:
    return os.getloadavg()[0]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (Linux /proc), and of the finished
    child processes waited for (the RR22 engine runs)."""
    children = os.times()
    total = round((children.children_user + children.children_system) * os.sysconf("SC_CLK_TCK"))
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def pids(engine: Engine | None) -> list[int]:
    workers = getattr(getattr(engine, "_executor", None), "_processes", None) or {}
    return [os.getpid(), *workers]


def _reference_only() -> None:
    """Worker initialiser: X25519 through ``cryptography`` only."""
    x25519_mb.disable("the bench's reference run")


def reference_engine(workers: int | None) -> Engine:
    count = workers or os.cpu_count() or 1
    pool = ProcessPoolExecutor(
        count, mp_context=multiprocessing.get_context("forkserver"), initializer=_reference_only
    )
    engine = Engine(count, executor=pool)
    return engine.start()


def ours(n: int, group: str, engine: Engine) -> tuple[float, int]:
    t = time.perf_counter()
    a = Initiator("bench", "id:uscc", mode="me", group_name=group, engine=engine)
    a.load(arrays(0, n))
    b = Responder("bench", "id:uscc", group_name=group, engine=engine)
    b.load(arrays(n // 2, n + n // 2))
    ra, _ = run_local(a, b)
    return time.perf_counter() - t, int(ra.size or 0)


def rr22(n: int, folder: Path) -> tuple[float, int] | None:
    """Both sides at once, each in its own process (as on two nodes), over loopback, each
    doing what a job's side does: read its key column from Parquet, encode it, run the
    engine, and (the receiver) map the intersection back to its rows."""
    if not rr22_available():
        return None
    inputs = [rr22_input(folder, 0, n), rr22_input(folder, n // 2, n)]
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    sides = [
        context.Process(target=_rr22_side, args=(rank, inputs[rank], addresses, results))
        for rank in (0, 1)
    ]
    t = time.perf_counter()
    for side in sides:
        side.start()
    found = {rank: (size, phases) for rank, size, phases in (results.get() for _ in sides)}
    for side in sides:
        side.join()
    secs = time.perf_counter() - t
    for rank, (_, phases) in sorted(found.items()):
        print(f"    rank {rank}: " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()))
    return secs, found[0][0]


def rr22_input(folder: Path, lo: int, n: int) -> Path:
    """One side's identifiers as a dataset's Parquet file (written once, outside the clock)."""
    path = folder / f"rr22-{lo}-{n}.parquet"
    if not path.exists():
        pq.write_table(pa.table({"id": pa.concat_arrays(list(arrays(lo, lo + n)))}), path)
    return path


def _rr22_side(rank: int, path: Path, addresses: list[str], results: Any) -> None:
    phases, t = {}, time.perf_counter()
    source = mp_rr22.Input.load(path, KeySpec.parse("id:uscc"))
    phases["read+encode"], t = time.perf_counter() - t, time.perf_counter()
    found = run_rr22_hex(source.hex, rank=rank, addresses=addresses).hex
    phases["engine"], t = time.perf_counter() - t, time.perf_counter()
    rows = mp_rr22.positions(source, found, "me") if rank == 0 else []
    phases["rows"] = time.perf_counter() - t
    results.put((rank, len(rows), phases))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def openmined(n: int) -> tuple[float, int] | None:
    try:
        import private_set_intersection.python as psi  # type: ignore[import-not-found]
    except ImportError:
        return None
    a_ids, b_ids = ids(0, n), ids(n // 2, n + n // 2)
    t = time.perf_counter()
    server = psi.server.CreateWithNewKey(True)
    client = psi.client.CreateWithNewKey(True)
    setup = server.CreateSetupMessage(0.0, n, b_ids, psi.DataStructure.RAW).SerializeToString()
    request = client.CreateRequest(a_ids).SerializeToString()
    req = psi.Request()
    req.ParseFromString(request)
    response = server.ProcessRequest(req).SerializeToString()
    su, resp = psi.ServerSetup(), psi.Response()
    su.ParseFromString(setup)
    resp.ParseFromString(response)
    size = len(client.GetIntersection(su, resp))
    return time.perf_counter() - t, size


def median_run(
    label: str, n: int, run: object, repeat: int, engine: Engine | None = None
) -> float | None:
    times = []
    for i in range(repeat):
        before, procs = load(), pids(engine)
        cpu = cpu_seconds(procs)
        got = run()  # type: ignore[operator]
        if got is None:
            return None
        secs, size = got
        cpu = cpu_seconds(procs) - cpu
        assert size == n - n // 2, size
        times.append(secs)
        line = f"  {label:<22} {n:>9} x {n:<9} run {i + 1}: {secs:8.2f} s  {n / secs:9.0f}"
        print(f"{line} rec/s/side  cpu {cpu:7.2f} s  (load {before:.2f} -> {load():.2f})",
              flush=True)  # fmt: skip
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--groups", nargs="*", default=["x25519"], help="none: RR22 only")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--openmined-max", type=int, default=10**9, help="largest n for openmined")
    args = parser.parse_args()
    fast = x25519_mb.backend() is not None
    print("multi-buffer X25519:", "yes" if fast else f"no ({x25519_mb.unavailable_reason()})")
    with Engine(args.workers) as engine, tempfile.TemporaryDirectory() as folder:
        engine.start()
        reference = reference_engine(args.workers) if fast else None
        for n in args.sizes:
            om = None
            if n <= args.openmined_max:
                om = median_run("openmined-psi", n, lambda n=n: openmined(n), args.repeat)
            if om:
                print(f"openmined-psi  {n:>9} x {n:<9} median {om:7.2f} s  "
                      f"{n / om:9.0f} rec/s/side")  # fmt: skip
            runs = [(group, engine) for group in args.groups]
            if reference is not None and "x25519" in args.groups:
                runs.append(("x25519/openssl", reference))
            for label, pool in runs:
                group = label.split("/")[0]
                run = lambda n=n, g=group, e=pool: ours(n, g, e)  # noqa: E731
                secs = median_run(f"ours {label}", n, run, args.repeat, pool)
                assert secs is not None
                ratio = f"  {om / secs:4.1f}x openmined-psi" if om else ""
                print(f"ours {label:<14} {n:>7} x {n:<9} median {secs:7.2f} s  "
                      f"{n / secs:9.0f} rec/s/side{ratio}")  # fmt: skip
            if rr22_available():
                run22 = lambda n=n: rr22(n, Path(folder))  # noqa: E731
                secs = median_run("RR22 (spu)", n, run22, args.repeat)
                assert secs is not None
                ratio = f"  {om / secs:4.1f}x openmined-psi" if om else ""
                print(f"RR22 (spu)        {n:>7} x {n:<9} median {secs:7.2f} s  "
                      f"{n / secs:9.0f} rec/s/side{ratio}  (goal at 1M: <= 3 s)")  # fmt: skip
        if reference is not None:
            reference._executor.shutdown()  # type: ignore[union-attr]
    if not rr22_available():
        print("RR22 (spu): not installed (make spu), skipped")


if __name__ == "__main__":
    main()
