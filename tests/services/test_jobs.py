"""Provider-side jobs: run_job under an agreement, on one node acting as the provider."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dataspace.compute.errors import QueryRefused
from dataspace.errors import Conflict, NotFound, UsageError
from dataspace.ledger import log
from dataspace.metering import reconcile
from dataspace.policy import PolicyDenied, from_template
from dataspace.privacy import BudgetExhausted, get_budget
from dataspace.services import datasets, jobs, offers
from dataspace.services.job_wire import from_ipc, sha256_hex
from dataspace.services.node import Node
from dataspace.store.models_compute import JobRow
from dataspace.store.models_metering import UsageRecord
from helpers.agreements import make_agreement

CONSUMER = "bank"
DISTRICTS = {"d1": 3, "d2": 6, "d3": 12, "d4": 25}  # district -> taxpayers
DP = {"epsilon": 0.5, "delta": 1e-6, "bounds": {"tax_paid": [0, 10000]}}


def write_taxpayers(path: Path) -> Path:
    lines = ["person_id,district,industry,tax_paid,age"]
    n = 0
    for district, count in DISTRICTS.items():
        for i in range(count):
            n += 1
            lines.append(
                f"P{n:05d},{district},{'retail' if i % 2 else 'software'},"
                f"{1000 + 37 * n},{25 + n % 40}"
            )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def add_taxpayers(node: Node, tmp_path: Path) -> str:
    view = datasets.add(
        node, write_taxpayers(tmp_path / "taxpayers.csv"), name="taxpayers", actor="test"
    )
    datasets.reclassify(node, "taxpayers", column="person_id", category="id_card_cn", actor="test")
    datasets.reclassify(node, "taxpayers", column="tax_paid", category="financial", actor="test")
    return str(view["id"])


@pytest.fixture
def provider(make_node: Callable[..., tuple[Node, str]], tmp_path: Path) -> tuple[Node, str]:
    node, _ = make_node("tax-bureau")
    return node, add_taxpayers(node, tmp_path)


def agree(
    provider: tuple[Node, str],
    template: str = "aggregate-only",
    *,
    dp: dict[str, Any] | None = None,
    price_terms: dict[str, Any] | None = None,
    purpose: str = "credit-risk",
    **params: Any,
) -> str:
    node, dataset_id = provider
    params.setdefault("purposes", ["finance"])
    if template == "aggregate-only":
        params.setdefault("min_group_size", 10)
    offer = from_template(template, **params)
    return make_agreement(
        node,
        CONSUMER,
        dataset_id=dataset_id,
        offer=offer,
        purpose=purpose,
        dp=dp,
        price_terms=price_terms,
    )


def entries(node: Node, action: str) -> list[dict[str, Any]]:
    with node.store.read() as session:
        rows = log.entries(session, 0, 10_000)
    out = []
    for row in rows:
        data = row.to_dict()
        if data["entry"]["action"] == action:
            out.append(data["payload"])
    return out


def usage_rows(node: Node) -> list[UsageRecord]:
    with node.store.read() as session:
        return list(session.scalars(select(UsageRecord).order_by(UsageRecord.ledger_index)))


def job_state(node: Node, job_id: str) -> str:
    with node.store.read() as session:
        row = session.get(JobRow, job_id)
        assert row is not None
        return row.state


SQL = "SELECT district, count(*) AS n, avg(tax_paid) AS avg_tax FROM taxpayers GROUP BY district"


def test_allowed_aggregate_query_releases_only_groups_of_k(provider: tuple[Node, str]) -> None:
    node, _ = provider
    agreement = agree(provider, price_terms={"per_job": "10.00 CNY"})
    outcome = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL)
    rows = sorted(outcome.table.to_pylist(), key=lambda r: r["district"])
    assert [(r["district"], r["n"]) for r in rows] == [("d3", 12), ("d4", 25)]
    assert outcome.meta["result_sha256"] == sha256_hex(outcome.ipc)
    assert from_ipc(outcome.ipc).equals(outcome.table)
    assert outcome.meta["price"] == {"amount": "10.00", "currency": "CNY"}
    assert job_state(node, outcome.job_id) == jobs.SUCCEEDED
    [done] = entries(node, "job.completed")
    assert done["result_sha256"] == outcome.result_sha256
    assert done["result_rows"] == 2 and done["rows_scanned"] == sum(DISTRICTS.values())
    [usage] = usage_rows(node)
    assert (usage.status, usage.price_amount, usage.job_id) == (
        "completed",
        "10.00",
        outcome.job_id,
    )


def test_raw_row_sql_is_refused_and_logged_as_denied(provider: tuple[Node, str]) -> None:
    node, _ = provider
    agreement = agree(provider)
    with pytest.raises(QueryRefused, match="row-level"):
        jobs.run_job(
            node,
            agreement_id=agreement,
            consumer=CONSUMER,
            sql="SELECT district, tax_paid FROM taxpayers",
            job_id="raw-1",
        )
    assert job_state(node, "raw-1") == jobs.DENIED
    [denied] = entries(node, "job.denied")
    assert denied["code"] == "query_refused" and denied["job_id"] == "raw-1"
    [usage] = usage_rows(node)
    assert (usage.status, usage.price_amount) == ("denied", "0")


def test_a_grouped_dp_query_under_an_offer_spending_no_delta_is_refused_for_no_epsilon(
    provider: tuple[Node, str],
) -> None:
    node, _ = provider
    agreement = agree(provider, "dp-stats", dp={**DP, "delta": 0}, epsilon=1.0, min_group_size=5)
    with pytest.raises(QueryRefused, match="allow no GROUP BY") as refused:
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER,
                     sql="SELECT district, count(*) AS n FROM taxpayers GROUP BY 1")
    assert "no ε was spent" in (refused.value.hint or "")
    overall = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER,
                           sql="SELECT count(*) AS n FROM taxpayers")
    assert overall.table.num_rows == 1
    assert get_budget(node.store, agreement).epsilon_spent == Decimal("0.5")


def test_sql_that_cannot_fit_the_columns_is_refused_with_the_reason_before_it_runs(
    provider: tuple[Node, str],
) -> None:
    node, _ = provider
    agreement = agree(provider, price_terms={"per_job": "10.00 CNY"})
    with pytest.raises(QueryRefused, match="Cannot compare values of type VARCHAR") as refused:
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, job_id="types-1",
                     sql="SELECT count(*) AS n FROM taxpayers WHERE district > 5")
    assert "nothing was run or charged" in (refused.value.hint or "")
    with pytest.raises(QueryRefused, match="'forty' in WHERE is not a BIGINT value"):
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, job_id="types-2",
                     sql="SELECT count(*) AS n FROM taxpayers WHERE age > 'forty'")
    assert job_state(node, "types-1") == job_state(node, "types-2") == jobs.DENIED
    assert [u.price_amount for u in usage_rows(node)] == ["0", "0"]


ESCAPES = [
    "COPY taxpayers TO '/tmp/x.csv'",
    "SELECT count(*) FROM read_csv('/etc/passwd')",
    "ATTACH '/tmp/other.db'",
    "INSTALL httpfs",
    "SET enable_external_access = true",
    "PRAGMA database_list",
    "SELECT count(*) FROM taxpayers a, taxpayers b, taxpayers c",
    "SELECT sum(length(repeat('x', 1000000000))) FROM taxpayers",
]


def test_escape_attempts_are_refused_and_each_logged(provider: tuple[Node, str]) -> None:
    node, _ = provider
    agreement = agree(provider)
    for sql in ESCAPES:
        with pytest.raises(QueryRefused):
            jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=sql)
    denied = entries(node, "job.denied")
    assert [d["sql"] for d in denied] == ESCAPES
    assert {d["code"] for d in denied} == {"query_refused"}
    assert [u.status for u in usage_rows(node)] == ["denied"] * len(ESCAPES)
    # the node keeps serving
    ok = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL)
    assert ok.table.num_rows == 2


def test_prohibited_field_is_denied_with_reasons(provider: tuple[Node, str]) -> None:
    node, _ = provider
    agreement = agree(provider, fields=["district", "industry", "tax_paid"])
    with pytest.raises(PolicyDenied) as info:
        jobs.run_job(
            node,
            agreement_id=agreement,
            consumer=CONSUMER,
            sql="SELECT district, avg(age) FROM taxpayers GROUP BY district",
        )
    assert any(r["left"] == "fields" for r in info.value.details["reasons"])
    [denied] = entries(node, "job.denied")
    assert [r["left"] for r in denied["reasons"] if r["left"]] == ["fields"]


def test_expired_agreement_is_denied(provider: tuple[Node, str]) -> None:
    node, _ = provider
    past = datetime.now(UTC) - timedelta(days=1)
    agreement = agree(provider, expires=past.isoformat())
    with pytest.raises(PolicyDenied, match=r"dateTime|expire|time"):
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL)
    [denied] = entries(node, "job.denied")
    assert {r["left"] for r in denied["reasons"]} >= {"dateTime"}


def test_exhausted_job_count_is_denied(provider: tuple[Node, str]) -> None:
    node, _ = provider
    agreement = agree(provider, max_jobs=2)
    for _ in range(2):
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL)
    with pytest.raises(PolicyDenied):
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL)
    [denied] = entries(node, "job.denied")
    assert [r["left"] for r in denied["reasons"] if r["left"] == "count"] == ["count"]


def test_wrong_purpose_is_denied(provider: tuple[Node, str]) -> None:
    node, _ = provider
    agreement = agree(provider, purpose="targeted-advertising")
    with pytest.raises(PolicyDenied):
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL)
    [denied] = entries(node, "job.denied")
    assert "purpose" in {r["left"] for r in denied["reasons"]}


def test_foreign_or_unknown_agreement_is_not_found(provider: tuple[Node, str]) -> None:
    node, _ = provider
    agreement = agree(provider)
    with pytest.raises(NotFound):
        jobs.run_job(node, agreement_id=agreement, consumer="insurer", sql=SQL)
    with pytest.raises(NotFound):
        jobs.run_job(node, agreement_id="urn:uuid:nope", consumer=CONSUMER, sql=SQL)
    denied = entries(node, "job.denied")
    assert [d["code"] for d in denied] == ["not_found", "not_found"]
    assert usage_rows(node) == []  # nothing to meter a foreign agreement against


def test_unfinalized_agreement_is_refused(provider: tuple[Node, str]) -> None:
    node, dataset_id = provider
    agreement = make_agreement(
        node,
        CONSUMER,
        dataset_id=dataset_id,
        purpose="credit-risk",
        offer=from_template("aggregate-only", purposes=["finance"]),
        finalize=False,
    )
    with pytest.raises(PolicyDenied, match="VERIFIED, not FINALIZED"):
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL)


def test_same_job_id_is_idempotent(provider: tuple[Node, str]) -> None:
    node, _ = provider
    agreement = agree(provider, price_terms={"per_job": "1 CNY"})
    first = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL, job_id="j-1")
    again = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL, job_id="j-1")
    assert again.replayed and again.ipc == first.ipc and again.meta == first.meta
    assert len(usage_rows(node)) == 1 and len(entries(node, "job.completed")) == 1
    with pytest.raises(Conflict):
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql="SELECT 1", job_id="j-1")
    for _ in range(2):  # a denied job replays its error without another record
        with pytest.raises(QueryRefused):
            jobs.run_job(
                node,
                agreement_id=agreement,
                consumer=CONSUMER,
                sql="SELECT * FROM taxpayers",
                job_id="j-2",
            )
    assert len(entries(node, "job.denied")) == 1 and len(usage_rows(node)) == 2


def test_sql_that_is_not_unicode_text_is_refused_before_anything_is_claimed(
    provider: tuple[Node, str],
) -> None:
    """A lone surrogate (possible through the Python API, not over HTTP) crashed the worker,
    then the error record, leaving the job RUNNING with its ε spent."""
    node, _ = provider
    agreement = agree(provider, "dp-stats", dp=DP, epsilon=1.0, delta=1e-5, min_group_size=5)
    sql = "SELECT district, count(*) AS n FROM taxpayers WHERE industry = '\ud800' GROUP BY 1"
    with pytest.raises(QueryRefused, match="not Unicode text"):
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=sql, job_id="job-sur")
    with node.store.read() as session:
        assert session.get(JobRow, "job-sur") is None
    with pytest.raises(NotFound, match="no DP budget"):  # none reserved, none spent
        get_budget(node.store, agreement)


def test_dp_query_spends_budget_and_states_epsilon_left(provider: tuple[Node, str]) -> None:
    node, _ = provider
    agreement = agree(provider, "dp-stats", dp=DP, epsilon=1.0, delta=1e-5, min_group_size=5)
    outcome = jobs.run_job(
        node,
        agreement_id=agreement,
        consumer=CONSUMER,
        sql="SELECT district, count(*) AS n, sum(tax_paid) AS total "
        "FROM taxpayers GROUP BY district",
    )
    meta = outcome.meta
    assert meta["action"] == "dp-query"
    assert Decimal(meta["epsilon_spent"]) == Decimal("0.5")
    assert Decimal(meta["epsilon_left"]) == Decimal("0.5")
    assert set(meta["error_bounds"]) == {"n", "total"}
    assert get_budget(node.store, agreement).epsilon_spent == Decimal("0.5")
    [usage] = usage_rows(node)
    assert usage.epsilon_spent == "0.5"
    [done] = entries(node, "job.completed")
    assert done["epsilon_spent"] == "0.5" and done["epsilon_left"] == "0.5"


def test_exhausted_dp_budget_is_denied(provider: tuple[Node, str]) -> None:
    node, _ = provider
    agreement = agree(provider, "dp-stats", dp=DP, epsilon=1.0, delta=1e-5, min_group_size=5)
    sql = "SELECT count(*) AS n FROM taxpayers"
    for _ in range(2):
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=sql)
    with pytest.raises((PolicyDenied, BudgetExhausted)):
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=sql)
    [denied] = entries(node, "job.denied")
    assert "epsilon" in {r["left"] for r in denied["reasons"]}
    assert get_budget(node.store, agreement).epsilon_spent == Decimal("1.0")


@pytest.mark.parametrize("where", ["district > 3", "district + 1 > 3",
                                   "strftime(tax_paid, '%Y') = '2024'"])
def test_a_dp_query_the_columns_cannot_run_costs_no_epsilon(
    provider: tuple[Node, str], where: str
) -> None:
    """A text column compared with a number fails whatever the data: it cost the query's
    whole ε and answered nothing (two typos emptied a budget)."""
    node, _ = provider
    agreement = agree(provider, "dp-stats", dp=DP, epsilon=1.0, delta=1e-5, min_group_size=5)
    with pytest.raises(QueryRefused, match="does not fit the table's columns") as refused:
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER,
                     sql=f"SELECT count(*) AS n FROM taxpayers WHERE {where}")
    assert refused.value.hint == "fix the query; no ε was spent"
    outcome = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER,
                           sql="SELECT count(*) AS n FROM taxpayers")
    assert Decimal(outcome.meta["epsilon_left"]) == Decimal("0.5")  # only the answer paid


def test_the_policy_weighs_the_delta_a_query_spends_not_the_offers(
    provider: tuple[Node, str]
) -> None:
    """An ungrouped Laplace query spends no δ; once a grouped one had used the agreement's
    δ, the policy still added the offer's δ per query and denied it with ε left."""
    node, _ = provider
    dp = {**DP, "delta": 1e-6}
    agreement = agree(provider, "dp-stats", dp=dp, epsilon=5.0, delta=1e-6, min_group_size=5)
    jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER,
                 sql="SELECT district, count(*) AS n FROM taxpayers GROUP BY district")
    assert get_budget(node.store, agreement).delta_left == 0
    ungrouped = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER,
                             sql="SELECT count(*) AS n FROM taxpayers")
    assert Decimal(ungrouped.meta["delta_spent"]) == 0
    with pytest.raises((PolicyDenied, BudgetExhausted)):  # a grouped one still needs δ
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER,
                     sql="SELECT district, count(*) AS n FROM taxpayers GROUP BY district")


def test_usage_and_ledger_reconcile(provider: tuple[Node, str]) -> None:
    node, _ = provider
    agreement = agree(provider, price_terms={"per_job": "2.50 CNY", "free_jobs": 1})
    for sql in (SQL, SQL, "SELECT * FROM taxpayers", SQL):
        with contextlib.suppress(QueryRefused):
            jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=sql)
    rows = usage_rows(node)
    assert [r.status for r in rows] == ["completed", "completed", "denied", "completed"]
    assert sum(Decimal(r.price_amount) for r in rows) == Decimal("5.00")
    with node.store.read() as session:
        report = reconcile(session)
    assert report.records == 4
    completed = entries(node, "job.completed")
    assert len(completed) == 3
    assert sum(Decimal(c["price"]["amount"]) for c in completed) == Decimal("5.00")
    assert json.dumps(report.to_dict())


def test_dp_query_cuts_each_person_to_the_offers_m(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path
) -> None:
    """One patient with 400 visits among 40 with one: the offer says m = 2, so the count of
    the clinic is 40 + 2 (plus noise of scale 0.5), not 440 -- the bound is enforced."""
    node, _ = make_node("hospital")
    lines = ["person_id,clinic,cost"] + [f"P{n:05d},c1,10" for n in range(1, 41)]
    lines += ["P00000,c1,100"] * 400
    (tmp_path / "visits.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    view = datasets.add(node, tmp_path / "visits.csv", name="visits", actor="test")
    datasets.reclassify(node, "visits", column="person_id", category="id_card_cn", actor="test")
    dp = {"epsilon": 4.0, "delta": 1e-6, "bounds": {"cost": [0, 100]}, "max_contributions": 2}
    agreement = agree((node, str(view["id"])), "dp-stats", dp=dp, epsilon=8.0, delta=1e-5,
                      min_group_size=5)  # fmt: skip
    outcome = jobs.run_job(
        node,
        agreement_id=agreement,
        consumer=CONSUMER,
        sql="SELECT clinic, count(*) AS n FROM visits GROUP BY clinic",
    )
    [row] = outcome.table.to_pylist()
    assert abs(row["n"] - 42) < 15  # P(|Laplace(0.5)| >= 15) ~ 1e-13
    assert outcome.meta["max_contributions"] == 2
    assert outcome.meta["contributor_column"] == "person_id"


def test_k_passes_over_a_per_row_code_for_the_person(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path
) -> None:
    """A per-row coupon code passes as a bank card, and bank_card ranks above email: counted
    by it, one customer's twelve rows in 'Smalltown' were twelve people and passed k = 10
    (the node's floor). A column with a value of its own in every row is passed over."""
    import random

    from dataspace.catalog.classify.bank_card import luhn_check_digit

    rng = random.Random(3)

    def coupon() -> str:
        body = "62" + f"{rng.randrange(10**13):013d}"
        return body + luhn_check_digit(body)

    lines = ["email,city,coupon_code,amount"]
    lines += [f"user{i}@example.com,City{i % 6},{coupon()},{10 + i}" for i in range(60)]
    lines += [f"lone@example.com,Smalltown,{coupon()},{1000 + j}" for j in range(12)]
    (tmp_path / "orders.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    node, _ = make_node("shop")
    view = datasets.add(node, tmp_path / "orders.csv", name="orders", actor="test")
    categories = {c: x["category"] for c, x in view["classification"]["columns"].items()}
    assert categories["coupon_code"] == "bank_card" and categories["email"] == "email"
    agreement = agree((node, str(view["id"])), min_group_size=5)
    outcome = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER,
                           sql="SELECT city, count(*) AS n FROM orders GROUP BY city")  # fmt: skip
    assert "Smalltown" not in {r["city"] for r in outcome.table.to_pylist()}
    assert outcome.meta["contributor_column"] == "email"


def test_a_dp_query_over_several_identifiers_needs_the_person_named(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path
) -> None:
    """Cut by a doctor's id over patients' rows, one added patient can push out another's
    row (twice the sensitivity): with two identifier columns the offer must name one."""
    node, _ = make_node("hospital")
    lines = ["person_id,doctor_id,clinic,cost"]
    lines += [f"P{n:05d},D{n % 4},c1,10" for n in range(40)]
    (tmp_path / "visits.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    view = datasets.add(node, tmp_path / "visits.csv", name="visits", actor="test")
    for column in ("person_id", "doctor_id"):
        datasets.reclassify(node, "visits", column=column, category="id_card_cn", actor="test")
    dp: dict[str, Any] = {"epsilon": 4.0, "delta": 1e-6, "bounds": {"cost": [0, 100]}}
    sql = "SELECT clinic, count(*) AS n FROM visits GROUP BY clinic"
    unnamed = agree((node, str(view["id"])), "dp-stats", dp=dp, epsilon=8.0, delta=1e-5)
    with pytest.raises(PolicyDenied, match=r"several identifier columns \(person_id, "
                       "doctor_id\\) and the offer does not say which one is the person"):
        jobs.run_job(node, agreement_id=unnamed, consumer=CONSUMER, sql=sql)
    named = agree((node, str(view["id"])), "dp-stats", epsilon=8.0, delta=1e-5,
                  dp={**dp, "contributor_column": "person_id"})  # fmt: skip
    outcome = jobs.run_job(node, agreement_id=named, consumer=CONSUMER, sql=sql)
    assert outcome.meta["contributor_column"] == "person_id"
    with pytest.raises(UsageError, match="several identifier columns"):  # and at the offer
        offers.create(node, "visits", actor="test", template="dp-stats",
                      params={"purposes": "finance", "epsilon": "2"},
                      dp_epsilon_per_query=0.5, dp_bounds={"cost": (0, 100)})


def test_a_result_file_no_job_records_is_removed_at_start_once_old(
    provider: tuple[Node, str],
) -> None:
    import os
    import time

    from dataspace.services.job_records import (
        ORPHAN_RESULT_GRACE_SECONDS,
        orphan_results,
        result_path,
    )

    node, _ = provider
    agreement = agree(provider)
    outcome = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL)
    recorded = result_path(node, outcome.result_sha256)
    # a job killed between writing its result and committing: nothing records that file
    orphan, fresh = result_path(node, "ab" * 32), result_path(node, "cd" * 32)
    for file in (orphan, fresh):
        file.write_bytes(outcome.ipc)
    long_ago = time.time() - ORPHAN_RESULT_GRACE_SECONDS - 1
    for file in (orphan, recorded):  # the recorded one is as old: it stays
        os.utime(file, (long_ago, long_ago))
    assert orphan_results(node) == [orphan.name]
    assert recorded.exists() and fresh.exists() and not orphan.exists()


def test_a_result_kept_already_is_made_fresh_when_a_job_stores_it_again(
    provider: tuple[Node, str],
) -> None:
    import os
    import time

    from dataspace.services.job_records import orphan_results, result_path

    node, _ = provider
    agreement = agree(provider)
    first = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL)
    kept = result_path(node, first.result_sha256)
    os.utime(kept, (0, 0))  # as old as an orphan
    second = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL)
    assert second.result_sha256 == first.result_sha256  # the same bytes, one file
    assert kept.stat().st_mtime > time.time() - 60
    assert orphan_results(node) == []
