"""Ledger benchmark: durable appends, batched fill, proofs, full audit.

    .venv/bin/python bench/ledger.py [--sizes 100000,1000000] [--database-url URL]

Without --database-url each size gets a fresh SQLite file (WAL, synchronous=FULL) in a temp
dir; with a postgresql:// URL each size runs in its own schema, dropped afterwards.
"""

from __future__ import annotations

import argparse
import base64
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from dataspace.identity.note import NoteSigner
from dataspace.ledger import audit, log, merkle, proof
from dataspace.store.db import Store, sqlite_url

BATCH = 1000
ORIGIN = "bench.dataspace.example/ledger"


@contextmanager
def fresh_store(url: str | None, tmp: Path, size: int) -> Iterator[Store]:
    if url is None:
        store = Store(sqlite_url(tmp / f"bench-{size}.db"))
        store.migrate()
        try:
            yield store
        finally:
            store.close()
        return
    schema = f"b_{secrets.token_hex(6)}"
    store = Store(url, schema=schema)
    try:
        store.migrate()
        yield store
    finally:
        with store.engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        store.close()


def entry(i: int) -> log.NewEntry:
    return log.NewEntry(
        actor=f"node:{i % 7}",
        action="dataset.added" if i % 3 else "token.issued",
        payload={"id": f"{i:012d}", "rows": i * 13 % 100_000, "name": f"dataset-{i}"},
        time=datetime.now(UTC),
    )


def fill(store: Store, count: int, progress: Callable[[int], None]) -> float:
    start = time.perf_counter()
    done = 0
    while done < count:
        n = min(BATCH, count - done)
        with store.write() as session:
            log.append_many(session, (entry(done + i) for i in range(n)))
        done += n
        progress(done)
    return count / (time.perf_counter() - start)


def durable_appends(store: Store, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        with store.write() as session:
            e = entry(i)
            log.append(session, actor=e.actor, action=e.action, payload=e.payload)
    return count / (time.perf_counter() - start)


def mean_ms(samples: list[float]) -> float:
    return statistics.fmean(samples) * 1000


def bench_size(store: Store, size: int, args: argparse.Namespace) -> dict[str, float]:
    out: dict[str, float] = {}
    last = [0.0]

    def progress(done: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 2 or done == size:
            last[0] = now
            print(f"  fill {done:>9,}/{size:,}", file=sys.stderr, end="\r")

    out["fill_per_s"] = fill(store, size, progress)
    print(file=sys.stderr)
    out["durable_per_s"] = durable_appends(store, args.durable)
    signer = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    with store.write() as session:
        note = log.sign_checkpoint(session, signer, ORIGIN)
    vkey = signer.verifier_key()
    rng = random.Random(size)
    with store.read() as session:
        n = log.size(session)
        root = log.root(session)
        leaves = {}
        gen, ver = [], []
        for _ in range(args.proofs):
            i = rng.randrange(n)
            leaves[i] = log.get_entry(session, i).leaf_hash
            t0 = time.perf_counter()
            path = log.inclusion_proof(session, i, n)
            t1 = time.perf_counter()
            merkle.verify_inclusion(leaves[i], i, n, path, root)
            t2 = time.perf_counter()
            gen.append(t1 - t0)
            ver.append(t2 - t1)
        out["incl_gen_ms"], out["incl_ver_ms"] = mean_ms(gen), mean_ms(ver)
        gen, ver = [], []
        for _ in range(args.proofs):
            m = rng.randrange(1, n)
            t0 = time.perf_counter()
            old_root = log.root(session, m)
            path = log.consistency_proof(session, m, n)
            t1 = time.perf_counter()
            merkle.verify_consistency(m, n, path, old_root, root)
            t2 = time.perf_counter()
            gen.append(t1 - t0)
            ver.append(t2 - t1)
        out["cons_gen_ms"], out["cons_ver_ms"] = mean_ms(gen), mean_ms(ver)
        gen, ver = [], []
        for _ in range(args.proofs):
            i = rng.randrange(n)
            t0 = time.perf_counter()
            bundle = proof.export_inclusion(session, i, checkpoint_note=note)
            t1 = time.perf_counter()
            proof.verify_inclusion_bundle(bundle, vkey)
            t2 = time.perf_counter()
            gen.append(t1 - t0)
            ver.append(t2 - t1)
        out["bundle_gen_ms"], out["bundle_ver_ms"] = mean_ms(gen), mean_ms(ver)
        assert base64.b64encode(root)
        t0 = time.perf_counter()
        report = audit.audit(session, signer.verifier())
        out["audit_s"] = time.perf_counter() - t0
        assert report.size == n
    out["size"] = n
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated log sizes")
    parser.add_argument("--database-url", default=None, help="postgresql://... (default SQLite)")
    parser.add_argument("--proofs", type=int, default=200, help="proofs timed per kind")
    parser.add_argument("--durable", type=int, default=300, help="one-append transactions timed")
    args = parser.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s]
    backend = "PostgreSQL" if args.database_url else "SQLite (WAL, synchronous=FULL)"
    print(f"ledger bench on {backend}; mean over {args.proofs} proofs per kind")
    header = (
        f"{'entries':>10} {'fill/s':>8} {'durable/s':>9} {'incl gen':>9} {'incl ver':>9} "
        f"{'cons gen':>9} {'cons ver':>9} {'bundle gen':>10} {'bundle ver':>10} {'audit':>8}"
    )
    print(header, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            print(f"size {size:,}", file=sys.stderr)
            with fresh_store(args.database_url, Path(tmp), size) as store:
                r = bench_size(store, size, args)
            print(
                f"{int(r['size']):>10,} {r['fill_per_s']:>8,.0f} {r['durable_per_s']:>9,.0f} "
                f"{r['incl_gen_ms']:>7.2f}ms {r['incl_ver_ms']:>7.3f}ms "
                f"{r['cons_gen_ms']:>7.2f}ms {r['cons_ver_ms']:>7.3f}ms "
                f"{r['bundle_gen_ms']:>8.2f}ms {r['bundle_ver_ms']:>8.3f}ms {r['audit_s']:>7.1f}s",
                flush=True,
            )


if __name__ == "__main__":
    main()
