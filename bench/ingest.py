"""Benchmark: import a generated 5M-row CSV (UTF-8, then GBK) and report rows/s and peak RSS.

    .venv/bin/python bench/ingest.py [--rows 5000000] [--skip-gbk]

The CSV is generated with DuckDB in a temporary directory (the GBK copy is transcoded from it
in 1 MiB chunks). Each import runs in a fresh child process so that its peak RSS
(``VmHWM`` / ``ru_maxrss``) is measured on its own, without the generator's memory.
"""

from __future__ import annotations

import argparse
import codecs
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from dataspace.catalog.ingest import import_file
from dataspace.settings import Limits

start = time.perf_counter()
result = import_file(Path(sys.argv[1]), Path(sys.argv[2]), limits=Limits())
elapsed = time.perf_counter() - start
hwm = 0
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        hwm = int(line.split()[1]) * 1024
rss = max(hwm, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
print(json.dumps({"rows": result.rows, "seconds": elapsed, "peak_rss": rss,
                  "encoding": result.source_encoding, "bytes": result.bytes,
                  "types": [c.type for c in result.columns]}))
"""

GENERATE = """
COPY (
  SELECT
    i AS loan_id,
    '1' || CAST(3000000000 + (i * 7919) % 6999999999 AS VARCHAR) AS mobile,
    lpad(CAST(i % 1000 AS VARCHAR), 4, '0') AS branch,
    ['张伟','王芳','李娜','刘洋','陈静','杨磊','赵敏','黄勇'][1 + i % 8] || CAST(i % 97 AS VARCHAR)
      AS legal_rep,
    round(1000 + (i * 37) % 5000000 / 7.0, 2) AS amount,
    DATE '2020-01-01' + CAST(i % 1800 AS INTEGER) AS issue_date,
    i % 11 = 0 AS overdue_90d,
    CASE WHEN i % 13 = 0 THEN NULL ELSE '杭州市西湖区文三路' || CAST(i % 500 AS VARCHAR) || '号'
      END AS address
  FROM range({rows}) t(i)
) TO '{path}' (FORMAT csv, HEADER true)
"""


def generate(path: Path, rows: int) -> None:
    con = duckdb.connect()
    con.execute(GENERATE.format(rows=rows, path=str(path)))
    con.close()


def to_gbk(src: Path, dest: Path) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    with src.open("rb") as fin, dest.open("wb") as fout:
        while chunk := fin.read(1 << 20):
            fout.write(decoder.decode(chunk).encode("gbk"))
        fout.write(decoder.decode(b"", final=True).encode("gbk"))


def run(src: Path, dest: Path) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(dest)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"import failed:\n{proc.stderr}")
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def report(label: str, size: int, result: dict[str, object]) -> None:
    rows = int(str(result["rows"]))
    seconds = float(str(result["seconds"]))
    rss = int(str(result["peak_rss"]))
    print(
        f"{label:<6} {rows:>9,} rows  {size / 2**20:7.1f} MiB in  {seconds:6.1f} s  "
        f"{rows / seconds:>10,.0f} rows/s  peak RSS {rss / 2**20:6.0f} MiB  "
        f"-> {int(str(result['bytes'])) / 2**20:.1f} MiB parquet  ({result['encoding']})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--skip-gbk", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        base = Path(tmp)
        csv_path = base / "loans.csv"
        t0 = time.perf_counter()
        generate(csv_path, args.rows)
        print(f"generated {args.rows:,} rows in {time.perf_counter() - t0:.1f} s")
        report("utf-8", csv_path.stat().st_size, run(csv_path, base / "loans.parquet"))
        if not args.skip_gbk:
            gbk_path = base / "loans_gbk.csv"
            to_gbk(csv_path, gbk_path)
            csv_path.unlink()
            report("gbk", gbk_path.stat().st_size, run(gbk_path, base / "loans_gbk.parquet"))
        budget = 1 << 30
        print(f"budget: peak RSS < {budget / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
