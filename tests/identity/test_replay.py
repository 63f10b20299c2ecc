"""Replay protection: one suite run against the SQL store (SQLite, PostgreSQL) and memory."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from dataspace.errors import SignatureError
from dataspace.identity.replay import (
    MemoryReplayStore,
    ReplayedRequest,
    ReplayStore,
    SqlReplayStore,
)
from dataspace.services.node import Node

NOW = 1_767_225_600


@pytest.fixture(params=["sql", "memory"])
def replay_store(request: pytest.FixtureRequest) -> SqlReplayStore | MemoryReplayStore:
    if request.param == "memory":
        return MemoryReplayStore()
    node: Node = request.getfixturevalue("node")
    return SqlReplayStore(node.store)


def test_fresh_nonce_is_accepted_once(replay_store: ReplayStore) -> None:
    replay_store.remember("bank+01", "n" * 22, expires_at=NOW + 60, now=NOW)
    with pytest.raises(SignatureError, match=r"replayed request: nonce 'n{22}' .* already seen"):
        replay_store.remember("bank+01", "n" * 22, expires_at=NOW + 60, now=NOW + 59)


def test_same_nonce_from_another_key_is_not_a_replay(replay_store: ReplayStore) -> None:
    replay_store.remember("bank+01", "n" * 22, expires_at=NOW + 60, now=NOW)
    replay_store.remember("tax+02", "n" * 22, expires_at=NOW + 60, now=NOW)


def test_replay_is_a_401(replay_store: ReplayStore) -> None:
    replay_store.remember("bank+01", "x" * 22, expires_at=NOW + 60, now=NOW)
    with pytest.raises(ReplayedRequest) as info:
        replay_store.remember("bank+01", "x" * 22, expires_at=NOW + 60, now=NOW)
    assert info.value.http_status == 401
    assert info.value.details == {"keyid": "bank+01"}


def test_nonce_whose_window_closed_is_refused(replay_store: ReplayStore) -> None:
    with pytest.raises(ReplayedRequest):
        replay_store.remember("bank+01", "y" * 22, expires_at=NOW - 1, now=NOW)


def test_expired_rows_are_pruned(replay_store: SqlReplayStore | MemoryReplayStore) -> None:
    for i in range(5):
        replay_store.remember("bank+01", f"nonce-{i:016d}", expires_at=NOW + i, now=NOW)
    assert replay_store.count() == 5
    assert replay_store.prune(NOW + 3) == 3  # expires_at 0, 1, 2 lie before NOW + 3
    assert replay_store.count() == 2
    # after its window the nonce may come again (its old signature is refused on age anyway)
    replay_store.remember("bank+01", "nonce-0000000000000000", expires_at=NOW + 400, now=NOW + 3)


def test_sql_store_prunes_on_its_own(node: Node) -> None:
    store = SqlReplayStore(node.store, prune_interval=60)
    store.remember("bank+01", "a" * 22, expires_at=NOW + 10, now=NOW)
    store.remember("bank+01", "b" * 22, expires_at=NOW + 100, now=NOW + 20)
    assert store.count() == 2
    store.remember("bank+01", "c" * 22, expires_at=NOW + 200, now=NOW + 61)
    assert store.count() == 2  # "a" went


def test_concurrent_replays_let_exactly_one_through(
    replay_store: SqlReplayStore | MemoryReplayStore,
) -> None:
    results: list[str] = []
    barrier = threading.Barrier(8)

    def attempt() -> None:
        barrier.wait()
        try:
            replay_store.remember("bank+01", "race-nonce-000000", expires_at=NOW + 60, now=NOW)
            results.append("accepted")
        except ReplayedRequest:
            results.append("replay")

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["accepted"] + ["replay"] * 7


def test_two_stores_on_one_database_share_what_they_saw(
    make_node: Callable[..., tuple[Node, str]],
) -> None:
    node, _ = make_node("tax")
    first, second = SqlReplayStore(node.store), SqlReplayStore(node.store)
    first.remember("bank+01", "z" * 22, expires_at=NOW + 60, now=NOW)
    with pytest.raises(ReplayedRequest):
        second.remember("bank+01", "z" * 22, expires_at=NOW + 60, now=NOW)
