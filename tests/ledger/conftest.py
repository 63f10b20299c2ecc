"""A fresh, migrated store per test: SQLite by default, PostgreSQL when
DATASPACE_TEST_DATABASE_URL is set (each test in its own schema, dropped afterwards)."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from dataspace.identity.note import NoteSigner, NoteVerifier
from dataspace.ledger import log
from dataspace.store.db import Store, sqlite_url

ORIGIN = "test.dataspace.example/ledger"
T0 = datetime(2025, 6, 1, 8, 0, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    url = os.environ.get("DATASPACE_TEST_DATABASE_URL")
    if url:
        schema = f"t_{secrets.token_hex(6)}"
        pg = Store(url, schema=schema)
        try:
            pg.migrate()
            yield pg
        finally:
            with pg.engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            pg.close()
    else:
        lite = Store(sqlite_url(tmp_path / "state.db"))
        lite.migrate()
        yield lite
        lite.close()


def make_signer(name: str = ORIGIN, seed: str = "node") -> NoteSigner:
    raw = hashlib.sha256(seed.encode()).digest()
    return NoteSigner(name, Ed25519PrivateKey.from_private_bytes(raw))


@pytest.fixture
def signer() -> NoteSigner:
    return make_signer()


@pytest.fixture
def impostor() -> NoteSigner:
    """Another key under the same name: what an operator re-signing history would use."""
    return make_signer(seed="impostor")


@pytest.fixture
def verifier(signer: NoteSigner) -> NoteVerifier:
    return NoteVerifier.parse(signer.verifier_key())


Fill = Callable[..., None]


@pytest.fixture
def fill(store: Store) -> Fill:
    """``fill(count, start_at=0)`` appends predictable entries in one transaction."""
    return lambda count, start_at=0: _fill(store, count, start_at)


def _fill(store: Store, count: int, start_at: int) -> None:
    items = [
        log.NewEntry(
            actor=f"user:{i % 3}",
            action="dataset.added",
            payload={"name": f"ds{i}", "rows": i * 10},
            time=T0 + timedelta(seconds=i),
        )
        for i in range(start_at, start_at + count)
    ]
    with store.write() as session:
        log.append_many(session, items)
