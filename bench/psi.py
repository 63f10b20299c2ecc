"""PSI throughput: our DH-PSI (X25519, byte messages, process pool) vs openmined-psi.

    .venv/bin/python bench/psi.py                  # 100k x 100k, 50% overlap
    .venv/bin/python bench/psi.py --sizes 1000000  # 1M x 1M

Both parties run in this process tree and really exchange the byte messages; the clock covers
the whole protocol (hashing, both blinding rounds, comparison). Records/s per side = n / time.
openmined-psi (P-256, single-threaded) runs the same way on the same identifiers. RR22 runs
only when ``spu`` is installed.
"""

from __future__ import annotations

import argparse
import time

import pyarrow as pa

from dataspace.privacy.psi import Engine, Initiator, Responder, rr22_available, run_local


def ids(lo: int, hi: int) -> list[str]:
    return [f"9111{i:014d}" for i in range(lo, hi)]


def ours(n: int, group: str, engine: Engine) -> tuple[float, int]:
    a_ids, b_ids = ids(0, n), ids(n // 2, n + n // 2)
    t = time.perf_counter()
    a = Initiator("bench", "uscc", mode="me", group_name=group, engine=engine)
    a.load(pa.array(a_ids[i : i + 100_000]) for i in range(0, n, 100_000))
    b = Responder("bench", "uscc", group_name=group, engine=engine)
    b.load(pa.array(b_ids[i : i + 100_000]) for i in range(0, n, 100_000))
    ra, _ = run_local(a, b)
    return time.perf_counter() - t, int(ra.size or 0)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--groups", nargs="+", default=["x25519"])
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    with Engine(args.workers) as engine:
        for n in args.sizes:
            om = openmined(n)
            if om:
                print(f"openmined-psi  {n:>9} x {n:<9} {om[0]:7.1f} s  {n / om[0]:9.0f} rec/s/side")
            for group in args.groups:
                secs, size = ours(n, group, engine)
                assert size == n - n // 2, size
                ratio = f"  {om[0] / secs:4.1f}x openmined-psi" if om else ""
                print(f"ours {group:<12} {n:>7} x {n:<9} {secs:7.1f} s  "
                      f"{n / secs:9.0f} rec/s/side{ratio}")  # fmt: skip
    print("RR22 (spu):", "available" if rr22_available() else "not installed, skipped")


if __name__ == "__main__":
    main()
