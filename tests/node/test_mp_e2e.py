"""Multi-party jobs across real node processes on loopback: PSI, secure aggregation, faults.

The initiator drives the job from the test process (its node directory opened here); the
participants are uvicorn processes. A participant is killed from the progress callback at a
chosen step to test that the job fails everywhere and that `retry` then succeeds.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from dataspace.cli.main import app
from dataspace.errors import Conflict, NotFound
from dataspace.policy import from_template
from dataspace.privacy.psi import normalize
from dataspace.samples.generate import make_uscc
from dataspace.scenarios.cluster import start_all
from dataspace.services import datasets, multiparty
from dataspace.services.mp_wire import MultipartyFailed, PeerRefused
from dataspace.services.node import Node, open_node
from dataspace.store.models import Dataset
from helpers.agreements import make_agreement
from helpers.ledger import payloads

BANK, TAX, GRID = "bank", "tax-bureau", "grid"
KEY = "credit_code:uscc"


def _messy(code: str, rng: random.Random) -> str:
    """The same code as a clerk might type it: lower case, spaces, full-width characters."""
    pick = rng.random()
    if pick < 0.2:
        return code.lower()
    if pick < 0.35:
        return f" {code[:6]} {code[6:]} "
    if pick < 0.45:
        return "".join(chr(ord(c) + 0xFEE0) for c in code)  # full-width
    return code


def _codes(path: Path, codes: list[str], rng: random.Random) -> Path:
    lines = ["credit_code,revenue"] + [f"{_messy(c, rng)},{rng.randint(1, 999)}" for c in codes]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _norm(values: list[str]) -> set[str]:
    return {str(normalize(v, "uscc")) for v in values}


@pytest.fixture(scope="module")
def shared_space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Any]]:
    """One space for the PSI tests of this module: starting nodes is the slow part."""
    from helpers.cluster import Space, start_space

    url = os.environ.get("DATASPACE_TEST_DATABASE_URL")
    started: list[tuple[Space, dict[str, str]]] = []

    def factory(names: list[str], *, serve: bool = True) -> Space:
        schemas = {n: f"t_{secrets.token_hex(6)}" for n in ["operator", *names]} if url else {}
        root = tmp_path_factory.mktemp("mp")
        space = start_space(root, names, database_url=url, schema_for=schemas, serve=serve)
        started.append((space, schemas))
        return space

    yield factory
    for space, schemas in started:
        space.stop()
        if url:
            from sqlalchemy import create_engine, text

            engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
            with engine.begin() as conn:
                for schema in schemas.values():
                    conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            engine.dispose()


@pytest.fixture(scope="module")
def psi_space(shared_space: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp_path = tmp_path_factory.mktemp("psi-data")
    space_factory = shared_space
    rng = random.Random(4)
    universe = sorted({make_uscc(rng, "110108") for _ in range(700)})[:600]
    bank_set = universe[:300]
    tax_set = universe[90:300] + universe[300:390]  # 210 of 300 shared with the bank: 70%
    grid_set = universe[0:60] + universe[150:300] + universe[400:490]
    space = space_factory([BANK, TAX, GRID], serve=False)
    nodes = {n: space.nodes[n].open() for n in (BANK, TAX, GRID)}
    ids = {}
    try:
        for name, codes in ((BANK, bank_set), (TAX, tax_set), (GRID, grid_set)):
            view = datasets.add(
                nodes[name],
                _codes(tmp_path / f"{name}.csv", codes, rng),
                name="companies",
                actor="t",
            )
            ids[name] = view["id"]
        psi = from_template(
            "psi-only", purposes=["finance"], output="pseudonymized", fields=["credit_code"]
        )
        agreements = {
            peer: make_agreement(
                nodes[peer],
                BANK,
                consumer=nodes[BANK],
                dataset_id=ids[peer],
                purpose="credit-risk",
                offer=psi,
            )
            for peer in (TAX, GRID)
        }
        agreements["grid-sql"] = make_agreement(
            nodes[GRID],
            BANK,
            consumer=nodes[BANK],
            dataset_id=ids[GRID],
            purpose="credit-risk",
            offer=from_template("aggregate-only", purposes=["finance"]),
        )
    finally:
        for n in nodes.values():
            n.close()
    start_all(space.nodes.values())
    sets = {BANK: _norm(bank_set), TAX: _norm(tax_set), GRID: _norm(grid_set)}
    return space, agreements, sets


def _job_at(space: Any, name: str, job_id: str) -> dict[str, Any]:
    node = open_node(space.nodes[name].root)
    try:
        return multiparty.get_job(node, job_id)
    finally:
        node.close()


def _dataset_path(node: Node, name: str) -> Path:
    with node.store.read() as session:
        row = session.scalars(select(Dataset).where(Dataset.name == name)).one()
        return node.data_dir / row.file_name


def _kept(space: Any, name: str, view: dict[str, Any]) -> list[str]:
    """The codes at the positions a node kept, in the kept order."""
    root = space.nodes[name].root
    positions = pq.read_table(root / "data" / view["result"]["rows_file"]).column("position")
    node = open_node(root)
    try:
        path = _dataset_path(node, "companies")
    finally:
        node.close()
    column = pq.read_table(path, columns=["credit_code"]).column("credit_code")
    return [str(normalize(v, "uscc")) for v in column.take(positions).to_pylist()]


def test_psi_across_three_nodes_finds_exactly_the_intersection(psi_space: Any) -> None:
    space, agreements, sets = psi_space
    bank = open_node(space.nodes[BANK].root)
    try:
        t0 = time.perf_counter()
        both = multiparty.run_psi(
            bank,
            agreements=[agreements[TAX]],
            peers=[TAX],
            dataset="companies",
            key=KEY,
            mode="both",
        )
        two_party_s = time.perf_counter() - t0
        expected = sets[BANK] & sets[TAX]
        assert 0.6 <= len(expected) / len(sets[BANK]) <= 0.8
        assert both["state"] == "SUCCEEDED" and both["result"]["size"] == len(expected)
        keys = multiparty.intersection_keys(bank, both["id"]).column("credit_code").to_pylist()
        assert _norm(keys) == expected
        at_tax = _job_at(space, TAX, both["id"])
        assert at_tax["state"] == "SUCCEEDED" and set(_kept(space, TAX, at_tax)) == expected
        # The initiator's view aggregates every node's step events.
        assert {e["node"] for e in both["steps"]} == {TAX}
        assert both["progress"]["done"] == len(both["steps"])

        align = multiparty.run_psi(
            bank, agreements=[agreements[TAX]], dataset="companies", key=KEY, mode="align"
        )
        mine, theirs = (
            _kept(space, BANK, align),
            _kept(space, TAX, _job_at(space, TAX, align["id"])),
        )
        assert mine == theirs and set(mine) == expected  # row i here pairs with row i there

        t0 = time.perf_counter()
        three = multiparty.run_psi(
            bank,
            agreements=[agreements[TAX], agreements[GRID]],
            peers=[TAX, GRID],
            dataset="companies",
            key=KEY,
        )
        three_party_s = time.perf_counter() - t0
        keys = multiparty.intersection_keys(bank, three["id"]).column("credit_code").to_pylist()
        assert _norm(keys) == sets[BANK] & sets[TAX] & sets[GRID]
        assert _job_at(space, GRID, three["id"])["state"] == "SUCCEEDED"

        # The same three-party PSI from the CLI, keys written to a file; then show and watch.
        out = space.nodes[BANK].root / "common.csv"
        cli = CliRunner()
        args = [
            "--node",
            str(space.nodes[BANK].root),
            "psi",
            "--agreement",
            agreements[TAX],
            "--with",
            TAX,
            "--agreement",
            agreements[GRID],
            "--with",
            GRID,
            "--peer-key",  # the grid names it as the bank does: the option travels all the same
            f"{GRID}={KEY}",
            "--on",
            KEY,
            "--dataset",
            "companies",
            "--out",
            str(out),
            "--json",
        ]
        ran = cli.invoke(app, args)
        assert ran.exit_code == 0, ran.output
        assert _norm(pacsv.read_csv(out).column("credit_code").to_pylist()) == _norm(keys)
        job_id = json.loads(ran.stdout)["id"]
        assert json.loads(ran.stdout)["params"]["peer_keys"] == {GRID: KEY}  # it travelled
        for command in (["job", "show", job_id], ["job", "watch", job_id, "--interval", "0.1"]):
            shown = cli.invoke(app, ["--node", str(space.nodes[BANK].root), *command])
            assert shown.exit_code == 0 and "SUCCEEDED" in shown.output and GRID in shown.output

        # The same from the bank's API: size only.
        with space.nodes[BANK].api() as api:
            started = api.post(
                "/api/v1/mp/psi",
                json={
                    "agreements": [agreements[TAX]],
                    "dataset": "companies",
                    "key": KEY,
                    "mode": "size",
                },
            )
            assert started.status_code == 202, started.text
            job_id = started.json()["id"]
            for _ in range(200):
                view = api.get(f"/api/v1/mp/jobs/{job_id}").json()
                if view["state"] != "RUNNING":
                    break
                time.sleep(0.1)
        assert view["state"] == "SUCCEEDED" and view["result"]["size"] == len(expected)
        assert "rows_file" not in view["result"]
        assert "rows_file" not in (_job_at(space, TAX, job_id)["result"] or {})

        # Each node's ledger has the job's steps, and each participant metered its part.
        tax = open_node(space.nodes[TAX].root)
        try:
            mine_steps = payloads(bank, "mp.step", both["id"])
            their_steps = payloads(tax, "mp.step", both["id"])
            assert len(mine_steps) == len(their_steps) >= 4
            assert [s["request_sha256"] for s in mine_steps] == [
                s["info"]["request_sha256"] for s in their_steps
            ]
            [completed] = payloads(tax, "job.completed", both["id"])
            assert completed["usage_id"] and completed["action"] == "psi"
        finally:
            tax.close()
        print(f"\nPSI 300x300 two-party {two_party_s:.2f}s, three-party {three_party_s:.2f}s")
    finally:
        bank.close()


def test_an_initiator_naming_a_dataset_it_lacks_is_told_it_is_its_own(psi_space: Any) -> None:
    space, agreements, _ = psi_space
    bank = open_node(space.nodes[BANK].root)
    try:
        with pytest.raises(NotFound) as info:
            multiparty.run_psi(bank, agreements=[agreements[TAX]], dataset="nope", key=KEY)
        assert info.value.message == "no dataset 'nope' on this node"
        assert "dataset list" in str(info.value.hint)
    finally:
        bank.close()


def test_the_last_participant_of_a_psi_chain_waits_kept_alive(psi_space: Any) -> None:
    """A three-party PSI runs its participants in turn: the grid, opened at once, idled while
    the tax bureau's run went on and timed the job out past its idle timeout (6 s here; 120 s
    by default, which a chain over about a million identifiers outlasts)."""
    space, agreements, sets = psi_space
    bank = open_node(space.nodes[BANK].root)
    slowed: list[str] = []

    def slow_tax_run(event: dict[str, Any], _: dict[str, Any]) -> None:
        if event["node"] == TAX and event["step"] >= 1 and event["name"] != "finish":
            slowed.append(event["name"])
            time.sleep(4.0)  # hello, points: 8 s in all, past the grid's 6 s

    try:
        view = multiparty.run_psi(
            bank, agreements=[agreements[TAX], agreements[GRID]], dataset="companies",
            key=KEY, step_timeout=2.0, idle_timeout=1.0, progress=slow_tax_run,
        )
    finally:
        bank.close()
    assert len(slowed) >= 2  # the tax bureau's run outlasted the grid's idle timeout
    assert view["state"] == "SUCCEEDED", view.get("error")
    assert view["result"]["size"] == len(sets[BANK] & sets[TAX] & sets[GRID])
    assert _job_at(space, GRID, view["id"])["state"] == "SUCCEEDED"


def test_a_participant_without_psi_permission_refuses_and_the_job_fails(psi_space: Any) -> None:
    space, agreements, _ = psi_space
    bank = open_node(space.nodes[BANK].root)
    try:
        with pytest.raises(PeerRefused) as info:
            multiparty.run_psi(
                bank,
                agreements=[agreements[TAX], agreements["grid-sql"]],
                dataset="companies",
                key=KEY,
            )
        assert info.value.details["node"] == GRID
        job = multiparty.list_jobs(bank)[0]
        assert job["state"] == "FAILED" and GRID in job["error"]["message"]
        at_grid = _job_at(space, GRID, job["id"])
        assert at_grid["state"] == "DENIED"
        at_tax = _job_at(space, TAX, job["id"])  # opened, then told: nothing kept there
        assert at_tax["state"] == "FAILED" and at_tax["result"] is None
        assert "ended the job" in at_tax["error"]["message"]
        grid = open_node(space.nodes[GRID].root)
        try:
            [denied] = payloads(grid, "job.denied", job["id"])
            assert "action" in {r.get("left") for r in denied["reasons"]} or denied["reasons"]
        finally:
            grid.close()
    finally:
        bank.close()


def test_a_peer_killed_mid_psi_fails_the_job_everywhere_and_retry_succeeds(
    psi_space: Any,
) -> None:
    space, agreements, sets = psi_space
    bank = open_node(space.nodes[BANK].root)

    def kill_grid_after_hello(event: dict[str, Any], progress: dict[str, Any]) -> None:
        if event["node"] == GRID and event["name"] == "hello":
            space.nodes[GRID].stop()

    try:
        with pytest.raises(MultipartyFailed) as info:
            multiparty.run_psi(
                bank,
                agreements=[agreements[TAX], agreements[GRID]],
                dataset="companies",
                key=KEY,
                progress=kill_grid_after_hello,
            )
        assert info.value.details["node"] == GRID
        failed = multiparty.list_jobs(bank)[0]
        assert failed["state"] == "FAILED" and failed["result"] is None
        assert failed["pending_aborts"] == [GRID]
        at_tax = _job_at(space, TAX, failed["id"])
        assert at_tax["state"] == "FAILED" and at_tax["result"] is None

        space.nodes[GRID].start()
        again = multiparty.retry(bank, failed["id"])
        assert again["state"] == "SUCCEEDED" and again["retry_of"] == failed["id"]
        assert again["attempt"] == 2 and again["id"] != failed["id"]
        keys = multiparty.intersection_keys(bank, again["id"]).column("credit_code").to_pylist()
        assert _norm(keys) == sets[BANK] & sets[TAX] & sets[GRID]
        at_grid = _job_at(space, GRID, failed["id"])  # told when the bank retried
        assert at_grid["state"] == "FAILED" and at_grid["result"] is None
        assert multiparty.get_job(bank, failed["id"])["pending_aborts"] == []
        # one retry per job: a second (a double click) would take every participant's slot
        # and ε again
        assert multiparty.get_job(bank, failed["id"])["retried_as"] == again["id"]
        with pytest.raises(Conflict, match=f"retried already, as {again['id']}"):
            multiparty.retry(bank, failed["id"])
    finally:
        bank.close()


# --- secure aggregation ----------------------------------------------------------------------

PARTIES = [f"plant-{i}" for i in range(1, 6)]
COORD = "ministry"


def _emissions(path: Path, rng: np.random.Generator, n: int) -> Path:
    co2 = rng.uniform(0, 5000, n).round(3)
    energy = rng.uniform(-50, 900, n).round(2)
    lines = ["site,co2,energy"] + [
        f"s{i},{c},{e}" for i, (c, e) in enumerate(zip(co2, energy, strict=True))
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_secure_aggregation_over_five_nodes_and_a_peer_killed_mid_round(
    space_factory: Callable[..., Any], tmp_path: Path
) -> None:
    space = space_factory([COORD, *PARTIES], serve=False)
    rng = np.random.default_rng(7)
    coord = space.nodes[COORD].open()
    agreements, truth = [], np.zeros(2)
    rows = 0
    policy = from_template(
        "psi-only",
        purposes=["public-interest"] if False else ["finance"],
        output="aggregate-only",
        fields=["co2", "energy"],
    )
    policy = replace(
        policy, permissions=(replace(policy.permissions[0], action="secure-aggregate"),)
    )
    for i, name in enumerate(PARTIES):
        node = space.nodes[name].open()
        try:
            path = _emissions(tmp_path / f"{name}.csv", rng, 40 + 10 * i)
            view = datasets.add(node, path, name="emissions", actor="t")
            table = pq.read_table(_dataset_path(node, "emissions"))
            truth += [sum(table.column("co2").to_pylist()), sum(table.column("energy").to_pylist())]
            rows += table.num_rows
            agreements.append(
                make_agreement(
                    node,
                    COORD,
                    consumer=coord,
                    dataset_id=view["id"],
                    purpose="credit-risk",
                    offer=policy,
                )
            )
        finally:
            node.close()
    start_all(space.nodes[name] for name in PARTIES)
    try:
        t0 = time.perf_counter()
        done = multiparty.run_aggregate(
            coord, agreements=agreements, peers=PARTIES, columns=["co2", "energy"]
        )
        seconds = time.perf_counter() - t0
        result = done["result"]
        assert done["state"] == "SUCCEEDED" and result["parties"] == 5
        got = np.array([result["values"]["co2"], result["values"]["energy"]])
        assert np.max(np.abs(got - truth)) <= result["error_bound"] + 1e-6
        assert result["count"] == rows
        for name in PARTIES:
            there = _job_at(space, name, done["id"])
            assert there["state"] == "SUCCEEDED"
            assert "values" not in (there["result"] or {})  # the sum is released here only

        mean = multiparty.run_aggregate(coord, agreements=agreements, columns=["co2"], op="mean")
        assert abs(mean["result"]["values"]["co2"] - truth[0] / rows) < 1e-3

        # with ε each party noises its own vector: no exact sum or row count at the coordinator
        private = multiparty.run_aggregate(coord, agreements=agreements, columns=["co2"],
                                           epsilon=100.0, bound=500_000.0)["result"]
        assert private["count"] is None and private["noise_error95"] > 0
        assert private["values"]["co2"] != pytest.approx(truth[0], abs=1.0)
        assert abs(private["values"]["co2"] - truth[0]) < 5 * private["noise_error95"]

        def kill_third(event: dict[str, Any], progress: dict[str, Any]) -> None:
            if event["node"] == PARTIES[2] and event["name"] == "round#1":
                space.nodes[PARTIES[2]].stop()

        with pytest.raises(MultipartyFailed):
            multiparty.run_aggregate(
                coord, agreements=agreements, columns=["co2", "energy"], progress=kill_third
            )
        [failed] = multiparty.list_jobs(coord, state="FAILED")
        assert failed["result"] is None and PARTIES[2] in failed["error"]["message"]
        for name in PARTIES:
            if name != PARTIES[2]:
                there = _job_at(space, name, failed["id"])
                assert there["state"] == "FAILED" and there["result"] is None
        space.nodes[PARTIES[2]].start()
        again = multiparty.retry(coord, failed["id"])
        got = np.array([again["result"]["values"]["co2"], again["result"]["values"]["energy"]])
        assert np.max(np.abs(got - truth)) <= again["result"]["error_bound"] + 1e-6
        assert _job_at(space, PARTIES[2], failed["id"])["state"] == "FAILED"
        print(f"\nsecure aggregation, 5 nodes x 2 columns: {seconds:.2f}s")
    finally:
        coord.close()
