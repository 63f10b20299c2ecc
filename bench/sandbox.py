"""Bench: a DP GROUP BY through the governed path vs raw DuckDB on the same data.

    .venv/bin/python bench/sandbox.py [--sizes 1000000,10000000] [--repeat 5] [--per-person 4]

For each size, writes a Parquet file (region: 20 groups, amount: double) to a temp dir and
times ``SELECT region, COUNT(*), SUM(amount) FROM t GROUP BY region``

* raw DuckDB, in-process, same thread count as the sandbox, reading the same Parquet file, two
  ways: on one warm connection (the fastest way to ask DuckDB; the strictest baseline) and on
  a new connection per query (what one query costs a script that opens DuckDB for it);
* governed: :func:`dataspace.privacy.run_dp_query` at ε = 1 — SQL check, DP rewrite (clamped
  exact decimal sum), budget reservation committed to a SQLite store, a fresh locked worker
  process, OpenDP noise and the group threshold.

The cold first query (empty scale cache, no sandbox process server yet) is printed once; the
timed runs are warm (cache filled, spare worker ready). Raw and governed runs alternate with
``--gap`` seconds of idle time before each, so neither side is timed while the other's
background work runs (after each job the node starts the next job's worker, ~20 ms of CPU),
and a change in the machine's load hits both sides alike. ``--gap 0`` times them back to back.
Medians of ``--repeat`` runs.

``--per-person R`` adds a ``person`` column (R rows each) that the governed side's policy
names as its contributor column, with m = R: every governed query then cuts each person to
m rows (a window over the table; nothing is cut here, the work is the same). The raw side
runs the plain query, so the ratio is the cut's price.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from dataspace.compute import SqlPolicy
from dataspace.compute.sandbox import SandboxLimits, shutdown
from dataspace.privacy import DpSpec, build_noise, ensure_budget, run_dp_query
from dataspace.store import Store

SQL = "SELECT region, COUNT(*), SUM(amount) FROM t GROUP BY region"
POLICY = SqlPolicy(table="t", columns={"region": "VARCHAR", "amount": "DOUBLE"}, min_group_size=5)
SPEC = DpSpec(epsilon=1.0, delta=1e-6, bounds={"amount": (0.0, 1000.0)})


def make_data(path: Path, rows: int, per_person: int) -> None:
    person = f", 'p' || (i // {per_person}) AS person" if per_person else ""
    duckdb.sql(
        f"""COPY (SELECT 'region-' || (hash(i) % 20) AS region,
                         (hash(i * 7) % 100000) / 100.0 AS amount{person}
                  FROM range({rows}) t(i)) TO '{path}' (FORMAT parquet)"""
    )


def bounded(per_person: int) -> tuple[SqlPolicy, DpSpec]:
    """The governed side's policy and spec: with a contributor column when per_person > 0."""
    if not per_person:
        return POLICY, SPEC
    policy = SqlPolicy(table="t", columns={**POLICY.columns, "person": "VARCHAR"},
                       min_group_size=5, contributor_column="person")  # fmt: skip
    return policy, dataclasses.replace(SPEC, max_contributions=per_person)


def time_raw(con: duckdb.DuckDBPyConnection, path: Path) -> float:
    start = time.perf_counter()
    con.sql(SQL.replace("FROM t", f"FROM read_parquet('{path}')")).to_arrow_table()
    return time.perf_counter() - start


def time_raw_new_connection(path: Path, threads: int) -> float:
    start = time.perf_counter()
    con = duckdb.connect(config={"threads": threads})
    con.sql(SQL.replace("FROM t", f"FROM read_parquet('{path}')")).to_arrow_table()
    con.close()
    return time.perf_counter() - start


def time_governed(store: Store, path: Path, limits: SandboxLimits, job_id: str,
                  per_person: int) -> float:  # fmt: skip
    policy, spec = bounded(per_person)
    start = time.perf_counter()
    run_dp_query(store, path, "t", SQL, policy, spec, "bench", job_id, limits)
    return time.perf_counter() - start


def time_all(
    store: Store, path: Path, limits: SandboxLimits, repeat: int, gap: float, tag: str,
    per_person: int,
) -> tuple[float, float, float]:
    """Medians of (raw on a warm connection, raw on a new connection, governed)."""
    warm, new, governed = [], [], []
    con = duckdb.connect(config={"threads": limits.threads})
    time_raw(con, path)  # warm the page cache and the connection
    for i in range(repeat):
        time.sleep(gap)
        warm.append(time_raw(con, path))
        time.sleep(gap)
        new.append(time_raw_new_connection(path, limits.threads))
        time.sleep(gap)
        governed.append(time_governed(store, path, limits, f"{tag}-{i}", per_person))
    con.close()
    return statistics.median(warm), statistics.median(new), statistics.median(governed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated row counts")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--gap", type=float, default=0.25, help="idle seconds before each run")
    parser.add_argument("--per-person", type=int, default=0,
                        help="rows per person of a contributor column (0: none)")  # fmt: skip
    args = parser.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",")]
    limits = SandboxLimits(memory_limit_mb=2048)
    with tempfile.TemporaryDirectory(prefix="dataspace-bench-") as tmp:
        root = Path(tmp)
        store = Store(f"sqlite:///{root / 'state.db'}")
        store.migrate()
        ensure_budget(store, "bench", 1_000_000, 0.5)
        policy, spec = bounded(args.per_person)
        cut = f", each person cut to m = {args.per_person} rows" if args.per_person else ""
        print(f"query: {SQL}  (ε = {SPEC.epsilon}, δ = {SPEC.delta}, {limits.threads} "
              f"threads{cut})")  # fmt: skip
        cold_done = False
        for rows in sizes:
            path = root / f"t{rows}.parquet"
            make_data(path, rows, args.per_person)
            if not cold_done:
                build_noise.cache_clear()
                start = time.perf_counter()
                run_dp_query(store, path, "t", SQL, policy, spec, "bench", "cold", limits)
                print(f"cold first governed query ({rows:,} rows, empty scale cache, no "
                      f"worker yet): {time.perf_counter() - start:.3f} s")  # fmt: skip
                cold_done = True
            run_dp_query(store, path, "t", SQL, policy, spec, "bench", "warm", limits)
            warm, new, governed = time_all(store, path, limits, args.repeat, args.gap, str(rows),
                                           args.per_person)  # fmt: skip
            goal = "no goal" if args.per_person else (
                "goal <= 3.0x" if rows <= 1_000_000 else "goal <= 1.5x")
            print(
                f"{rows:>12,} rows  governed DP {governed * 1000:7.1f} ms  |  raw DuckDB, warm "
                f"connection {warm * 1000:7.1f} ms: {governed / warm:5.2f}x  |  raw DuckDB, new "
                f"connection {new * 1000:7.1f} ms: {governed / new:5.2f}x  ({goal})"
            )
        store.close()
    shutdown()


if __name__ == "__main__":
    main()
