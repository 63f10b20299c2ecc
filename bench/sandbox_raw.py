"""Benchmark: GROUP BY with COUNT and SUM, raw DuckDB in-process vs the governed path (no DP yet).

    .venv/bin/python bench/sandbox_raw.py [--rows 1000000 10000000] [--repeat 7] [--json]

Generates a Parquet file per size in a temporary directory (50 regions, one DOUBLE amount).

* raw: one in-process DuckDB connection over ``read_parquet`` (the best case for raw DuckDB:
  connection already open, same thread count as the sandbox);
* governed: ``check_query`` + ``run_query`` end to end: parse, check and rewrite (with the
  minimum-group-size HAVING), a fresh locked worker process, Arrow IPC back to the caller --
  with k counting rows (a table without identifier columns) and, as a node does when the
  table names its people, distinct ids (``contributor_column="id"``; every id is unique
  here, the worst case for the distinct count).

Each figure is the median of ``--repeat`` runs after one warm-up; runs are 0.3 s apart so the
sandbox's next worker is ready, as it is between a consumer's queries. ``cold`` is the first
governed run in this process (it starts the sandbox's process server).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from dataspace.compute import SqlPolicy, check_query
from dataspace.compute.sandbox import SandboxLimits, run_query, shutdown

SQL = "SELECT region, count(*) AS n, sum(amount) AS total FROM sales GROUP BY region"
THREADS = 2


def generate(path: Path, rows: int) -> None:
    duckdb.sql(
        f"""COPY (SELECT i AS id, 'r' || (hash(i) % 50) AS region,
                   ((hash(i * 7) % 100000) / 100.0)::DOUBLE AS amount
            FROM range({rows}) t(i)) TO '{path}' (FORMAT parquet)"""
    )


def median_time(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    times = []
    for _ in range(repeat):
        time.sleep(0.3)
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    columns = {"id": "BIGINT", "region": "VARCHAR", "amount": "DOUBLE"}
    policy = SqlPolicy(table="sales", columns=columns, min_group_size=10)
    people = SqlPolicy(table="sales", columns=columns, identifier_columns=frozenset({"id"}),
                       contributor_column="id", min_group_size=10)  # fmt: skip
    limits = SandboxLimits(threads=THREADS, memory_limit_mb=1024)
    report = []
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        for rows in args.rows:
            path = Path(tmp) / f"sales_{rows}.parquet"
            generate(path, rows)
            con = duckdb.connect(config={"threads": THREADS})
            raw_sql = SQL.replace("FROM sales", f"FROM read_parquet('{path}')")

            def raw(con: duckdb.DuckDBPyConnection = con, raw_sql: str = raw_sql) -> None:
                con.sql(raw_sql).to_arrow_table()

            def governed(path: Path = path, policy: SqlPolicy = policy) -> None:
                run_query(path, "sales", check_query(SQL, policy), limits)

            start = time.perf_counter()
            cold = None
            if not report:
                governed()
                cold = time.perf_counter() - start
            start = time.perf_counter()
            check_n = 200
            for _ in range(check_n):
                check_query(SQL, policy)
            check_ms = (time.perf_counter() - start) / check_n * 1000
            t_raw = median_time(raw, args.repeat)
            t_gov = median_time(governed, args.repeat)
            t_people = median_time(lambda path=path: governed(path, people), args.repeat)
            con.close()
            report.append(
                {
                    "rows": rows,
                    "raw_s": round(t_raw, 4),
                    "governed_s": round(t_gov, 4),
                    "ratio": round(t_gov / t_raw, 2),
                    "governed_people_s": round(t_people, 4),
                    "people_ratio": round(t_people / t_raw, 2),
                    "overhead_ms": round((t_gov - t_raw) * 1000, 1),
                    "check_ms": round(check_ms, 2),
                    "cold_governed_s": round(cold, 3) if cold is not None else None,
                }
            )
    shutdown()
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{'rows':>12} {'raw s':>8} {'governed s':>11} {'ratio':>6} {'overhead ms':>12} "
        f"{'check ms':>9} {'k=people s':>11} {'ratio':>6}"
    )
    for r in report:
        print(
            f"{r['rows']:>12,} {r['raw_s']:>8.4f} {r['governed_s']:>11.4f} {r['ratio']:>6.2f}"
            f" {r['overhead_ms']:>12.1f} {r['check_ms']:>9.2f}"
            f" {r['governed_people_s']:>11.4f} {r['people_ratio']:>6.2f}"
        )
    cold_s = report[0]["cold_governed_s"] if report else None
    if cold_s is not None:
        print(
            f"first governed query in a fresh process (starts the process server): {cold_s:.3f} s"
        )


if __name__ == "__main__":
    main()
