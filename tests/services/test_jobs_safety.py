"""Provider jobs under pressure: racing job counts, k floors and contributors, crashed jobs,
DP spends in the ledger, and replays of an agreement that no longer holds.

Runs on SQLite, and on PostgreSQL when DATASPACE_TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from test_jobs import (
    CONSUMER,
    DP,
    SQL,
    add_taxpayers,
    agree,
    entries,
    job_state,
    usage_rows,
)

from dataspace.compute.errors import QueryFailed, QueryRefused
from dataspace.compute.sandbox import RunningQuery
from dataspace.contracts.negotiation import NegotiationState
from dataspace.errors import Conflict
from dataspace.policy import Policy, PolicyDenied, from_template
from dataspace.policy.model import Constraint, Operator
from dataspace.privacy import BudgetExhausted, list_spends
from dataspace.scratch import process_tag
from dataspace.services import datasets, job_policy, job_records, jobs
from dataspace.services import usage as usage_service
from dataspace.services.node import Node
from dataspace.settings import Limits
from dataspace.store.models_compute import JobRow
from dataspace.store.models_contracts import ContractAgreementRow, ContractNegotiationRow
from helpers.agreements import make_agreement


@pytest.fixture
def provider(make_node: Callable[..., tuple[Node, str]], tmp_path: Path) -> tuple[Node, str]:
    node, _ = make_node("tax-bureau")
    return node, add_taxpayers(node, tmp_path)


def districts(outcome: jobs.JobOutcome) -> list[str]:
    return sorted(r["district"] for r in outcome.table.to_pylist())


def with_constraints(
    policy: Policy, keep: Callable[[Constraint], bool], *extra: Constraint
) -> Policy:
    [rule] = policy.permissions
    kept = tuple(c for c in rule.constraints if isinstance(c, Constraint) and keep(c))
    return replace(policy, permissions=(replace(rule, constraints=(*kept, *extra)),))


def agree_with(provider: tuple[Node, str], offer: Policy, **kw: Any) -> str:
    node, dataset_id = provider
    return make_agreement(
        node, CONSUMER, dataset_id=dataset_id, offer=offer, purpose="credit-risk", **kw
    )


def rewind_claim(node: Node, job_id: str, seconds: float) -> None:
    """Make a job look as if it was claimed ``seconds`` ago (a crashed node's job)."""
    with node.store.write() as session:
        row = session.get(JobRow, job_id)
        assert row is not None and row.claimed_at is not None
        row.claimed_at = datetime.now(UTC) - timedelta(seconds=seconds)


class _Crash(BaseException):
    """The node process dying mid-job: nothing after it runs."""


def crash_while_running(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    def die(*args: Any, **_k: Any) -> Any:
        if args and isinstance(args[0], RunningQuery):
            args[0].cancel()  # the node dies with its worker; do not leak one into other tests
        raise _Crash

    monkeypatch.setattr(where, die)
    monkeypatch.setattr(jobs, "finish_error", lambda *_a, **_k: None)


# --- 1. the job count under concurrency ----------------------------------------------------------


@pytest.mark.parametrize(("max_jobs", "racers"), [(1, 6), (3, 8)])
def test_concurrent_jobs_cannot_overrun_the_job_count(
    provider: tuple[Node, str], max_jobs: int, racers: int
) -> None:
    node, _ = provider
    agreement = agree(provider, max_jobs=max_jobs)
    barrier = threading.Barrier(racers)
    won: list[str] = []
    denied: list[PolicyDenied] = []
    errors: list[BaseException] = []

    def race(i: int) -> None:
        barrier.wait()
        try:
            jobs.run_job(
                node, agreement_id=agreement, consumer=CONSUMER, sql=SQL, job_id=f"race-{i}"
            )
            won.append(f"race-{i}")
        except PolicyDenied as exc:
            denied.append(exc)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors
    assert len(won) == max_jobs and len(denied) == racers - max_jobs
    for exc in denied:
        assert "count" in {r["left"] for r in exc.details["reasons"] if not r["held"]}
    assert sorted(e["job_id"] for e in entries(node, "job.completed")) == sorted(won)
    assert [job_state(node, j) for j in won] == [jobs.SUCCEEDED] * max_jobs
    # the agreement stays used up
    with pytest.raises(PolicyDenied):
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL)


def test_a_running_job_holds_its_slot(provider: tuple[Node, str]) -> None:
    node, _ = provider
    agreement = agree(provider, max_jobs=1)
    with node.store.write() as session:  # admitted by another worker, still running
        session.add(
            JobRow(
                id="busy",
                role="provider",
                agreement_id=agreement,
                peer=CONSUMER,
                action=jobs.GOVERNED,
                state=jobs.RUNNING,
                request={"sql": SQL},
                created_at=datetime.now(UTC),
                claimed_at=datetime.now(UTC),
            )
        )
    with pytest.raises(PolicyDenied, match=r"count|jobs"):
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL)


def test_jobs_denied_for_other_reasons_take_no_slot(provider: tuple[Node, str]) -> None:
    node, _ = provider
    agreement = agree(provider, max_jobs=1)
    with pytest.raises(QueryRefused):
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql="SELECT * FROM taxpayers")
    assert jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL).table


# --- 2. governed SQL is aggregate-only, whatever the policy's output allows ----------------------


def test_pseudonymized_output_does_not_release_rows(provider: tuple[Node, str]) -> None:
    node, _ = provider
    base = from_template("aggregate-only", purposes=["finance"], min_group_size=10)
    offer = with_constraints(
        base,
        lambda c: c.left != "output",
        Constraint("output", Operator.LTEQ, "pseudonymized"),
    )
    agreement = agree_with(provider, offer)
    for sql in (
        "SELECT district, tax_paid FROM taxpayers",
        "SELECT district, age, industry FROM taxpayers WHERE tax_paid > 0 LIMIT 5",
    ):
        with pytest.raises(QueryRefused, match=r"row-level|aggregate"):
            jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=sql)
    assert {d["code"] for d in entries(node, "job.denied")} == {"query_refused"}
    ok = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL)
    assert districts(ok) == ["d3", "d4"]


# --- 3. the node's floor on k -------------------------------------------------------------------


def test_policy_without_min_group_size_gets_the_node_floor(provider: tuple[Node, str]) -> None:
    node, _ = provider
    base = from_template("aggregate-only", purposes=["finance"], min_group_size=10)
    agreement = agree_with(provider, with_constraints(base, lambda c: c.left != "minGroupSize"))
    outcome = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL)
    assert districts(outcome) == ["d3", "d4"]  # d1 (3) and d2 (6) are under the floor of 10
    assert outcome.meta["min_group_size"] == 10


def test_floor_and_policy_k_take_the_larger(provider: tuple[Node, str]) -> None:
    node, _ = provider
    node.limits = Limits({"min_group_size_floor": 5})
    low = agree(provider, min_group_size=2)
    assert districts(jobs.run_job(node, agreement_id=low, consumer=CONSUMER, sql=SQL)) == [
        "d2",
        "d3",
        "d4",
    ]
    high = agree(provider, min_group_size=20)
    outcome = jobs.run_job(node, agreement_id=high, consumer=CONSUMER, sql=SQL)
    assert districts(outcome) == ["d4"] and outcome.meta["min_group_size"] == 20


# --- 4. k counts contributors, not rows ----------------------------------------------------------


def write_visits(path: Path) -> Path:
    """Clinic 'a': 10 visits of one person. Clinic 'b': 10 visits of 10 people."""
    lines = ["person_id,household,clinic,cost"]
    lines += [f"P00001,H1,a,{100 + i}" for i in range(10)]
    lines += [f"P{10 + i:05d},H{2 + i % 5},b,{200 + i}" for i in range(10)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def clinic(make_node: Callable[..., tuple[Node, str]], tmp_path: Path) -> tuple[Node, str]:
    node, _ = make_node("hospital")
    view = datasets.add(node, write_visits(tmp_path / "visits.csv"), name="visits", actor="t")
    return node, str(view["id"])


VISITS = "SELECT clinic, count(*) AS n, avg(cost) AS c FROM visits GROUP BY clinic"


def visits_agreement(clinic: tuple[Node, str], dp: dict[str, Any] | None = None) -> str:
    node, dataset_id = clinic
    offer = from_template("aggregate-only", purposes=["finance"], min_group_size=10)
    return make_agreement(
        node, CONSUMER, dataset_id=dataset_id, offer=offer, purpose="credit-risk", dp=dp
    )


def test_ten_rows_of_one_person_do_not_make_a_group_of_ten(clinic: tuple[Node, str]) -> None:
    node, _ = clinic
    datasets.reclassify(node, "visits", column="person_id", category="id_card_cn", actor="t")
    agreement = visits_agreement(clinic)
    outcome = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=VISITS)
    assert [r["clinic"] for r in outcome.table.to_pylist()] == ["b"]
    assert outcome.meta["contributor_column"] == "person_id"
    alone = jobs.run_job(
        node,
        agreement_id=agreement,
        consumer=CONSUMER,
        sql="SELECT sum(cost) AS s FROM visits WHERE clinic = 'a'",
    )
    assert alone.table.num_rows == 0


def test_without_an_identifier_k_counts_rows(clinic: tuple[Node, str]) -> None:
    node, _ = clinic  # person_id is not classified: nothing says whose row it is
    agreement = visits_agreement(clinic)
    outcome = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=VISITS)
    assert sorted(r["clinic"] for r in outcome.table.to_pylist()) == ["a", "b"]
    assert outcome.meta["contributor_column"] is None


def test_offer_declared_contributor_column_is_counted(clinic: tuple[Node, str]) -> None:
    node, _ = clinic
    datasets.reclassify(node, "visits", column="person_id", category="id_card_cn", actor="t")
    agreement = visits_agreement(clinic, dp={"contributor_column": "household"})
    outcome = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=VISITS)
    assert outcome.table.num_rows == 0  # clinic b has 10 people but only 5 households
    assert outcome.meta["contributor_column"] == "household"


def test_offer_naming_a_missing_contributor_column_is_denied(clinic: tuple[Node, str]) -> None:
    node, _ = clinic
    agreement = visits_agreement(clinic, dp={"contributor_column": "nobody"})
    with pytest.raises(PolicyDenied, match="nobody"):
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=VISITS)


def test_contributor_prefers_a_national_id_over_other_identifiers() -> None:
    columns = {"phone": "VARCHAR", "company": "VARCHAR", "id_no": "VARCHAR", "x": "DOUBLE"}
    pick = job_policy._contributor
    assert pick(columns, {"phone": "mobile_cn", "id_no": "id_card_cn"}) == "id_no"
    assert pick(columns, {"phone": "mobile_cn", "company": "uscc"}) == "company"
    assert pick(columns, {"phone": "mobile_cn"}) == "phone"
    assert pick(columns, {}) is None
    # a column with a value of its own in every row names rows: passed over for another
    assert pick(columns, {"phone": "mobile_cn", "id_no": "id_card_cn"}, {"id_no"}) == "phone"
    assert pick(columns, {"phone": "mobile_cn", "id_no": "id_card_cn"},
                {"id_no", "phone"}) == "id_no"  # fmt: skip


# --- 5. crashed jobs: the lease ------------------------------------------------------------------


def test_crashed_job_is_failed_after_its_lease_and_the_id_answers(
    provider: tuple[Node, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    node, _ = provider
    agreement = agree(provider, max_jobs=1, price_terms={"per_job": "1 CNY"})
    with monkeypatch.context() as m:
        crash_while_running(m, "dataspace.services.jobs.run_query")
        with pytest.raises(_Crash):
            jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL, job_id="c-1")
    assert job_state(node, "c-1") == jobs.RUNNING
    with pytest.raises(Conflict, match="still running"):  # within the lease: in flight
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL, job_id="c-1")

    rewind_claim(node, "c-1", job_records.lease_seconds(node) + 1)
    for _ in range(2):  # the retry gets a final answer, the same one each time
        with pytest.raises(jobs.JobInterrupted, match="interrupted"):
            jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL, job_id="c-1")
    assert job_state(node, "c-1") == jobs.FAILED
    [failed] = entries(node, "job.failed")
    assert failed["job_id"] == "c-1" and failed["code"] == "job_interrupted"
    [usage] = usage_rows(node)
    assert (usage.job_id, usage.status, usage.price_amount) == ("c-1", "failed", "0")
    # the crashed job no longer holds the agreement's only job slot
    ok = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL, job_id="c-2")
    assert districts(ok) == ["d3", "d4"]


def test_stale_jobs_free_their_slot_when_another_job_is_admitted(
    provider: tuple[Node, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    node, _ = provider
    agreement = agree(provider, max_jobs=1)
    with monkeypatch.context() as m:
        crash_while_running(m, "dataspace.services.jobs.run_query")
        with pytest.raises(_Crash):
            jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL, job_id="s-1")
    rewind_claim(node, "s-1", job_records.lease_seconds(node) + 1)
    jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL, job_id="s-2")
    assert job_state(node, "s-1") == jobs.FAILED
    assert [e["job_id"] for e in entries(node, "job.failed")] == ["s-1"]


def test_sweep_fails_only_expired_jobs(
    provider: tuple[Node, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    node, _ = provider
    agreement = agree(provider)
    with monkeypatch.context() as m:
        crash_while_running(m, "dataspace.services.jobs.run_query")
        for job_id in ("old", "new"):
            with pytest.raises(_Crash):
                jobs.run_job(
                    node, agreement_id=agreement, consumer=CONSUMER, sql=SQL, job_id=job_id
                )
    rewind_claim(node, "old", job_records.lease_seconds(node) + 1)
    assert jobs.sweep_stale(node) == ["old"]
    assert jobs.sweep_stale(node) == []
    assert jobs.get_job(node, "old")["state"] == jobs.FAILED
    assert jobs.get_job(node, "new")["state"] == jobs.RUNNING


def test_a_job_that_outlived_its_lease_is_not_released(
    provider: tuple[Node, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    node, _ = provider
    agreement = agree(provider)
    real = jobs.run_query

    def slow(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        rewind_claim(node, "late", job_records.lease_seconds(node) + 1)
        jobs.sweep_stale(node)  # another process gives up on it meanwhile
        return result

    monkeypatch.setattr(jobs, "run_query", slow)
    with pytest.raises(Conflict, match="lease"):
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL, job_id="late")
    assert job_state(node, "late") == jobs.FAILED
    assert entries(node, "job.completed") == []
    assert not list((node.root / "results").glob("*.arrow"))  # no result file left either


def test_lease_is_never_shorter_than_a_job_may_run(provider: tuple[Node, str]) -> None:
    node, _ = provider
    node.limits = Limits({"job_lease_seconds": 1.0, "sandbox_timeout_seconds": 30.0})
    assert job_records.lease_seconds(node) >= 30.0
    node.limits = Limits({"job_lease_seconds": 900.0})
    assert job_records.lease_seconds(node) == 900.0


# --- 6. DP spends are in the ledger --------------------------------------------------------------


def test_dp_spend_of_a_crashed_job_is_in_the_ledger(
    provider: tuple[Node, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    node, _ = provider
    agreement = agree(provider, "dp-stats", dp=DP, epsilon=1.0, delta=1e-5, min_group_size=5)
    sql = "SELECT count(*) AS n FROM taxpayers"
    with monkeypatch.context() as m:
        crash_while_running(m, "dataspace.compute.sandbox.RunningQuery.result")
        with pytest.raises(_Crash):
            jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=sql, job_id="dp-1")
    [spend] = list_spends(node.store, agreement)
    [entry] = entries(node, "dp.spent")
    assert (entry["job_id"], entry["agreement_id"]) == ("dp-1", agreement)
    assert (Decimal(entry["epsilon"]), Decimal(entry["delta"])) == (spend.epsilon, spend.delta)
    # when the lease runs out the failure states what the job had already paid
    rewind_claim(node, "dp-1", job_records.lease_seconds(node) + 1)
    jobs.sweep_stale(node)
    [failed] = entries(node, "job.failed")
    assert Decimal(failed["epsilon_spent"]) == spend.epsilon


def test_every_dp_spend_of_jobs_has_its_entry(
    provider: tuple[Node, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    node, _ = provider
    agreement = agree(provider, "dp-stats", dp=DP, epsilon=1.0, delta=1e-5, min_group_size=5)
    sql = "SELECT count(*) AS n FROM taxpayers"
    jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=sql)

    def engine_error(running: RunningQuery) -> Any:
        running.cancel()
        raise QueryFailed("the query failed in the engine")

    with monkeypatch.context() as m:
        m.setattr("dataspace.compute.sandbox.RunningQuery.result", engine_error)
        with pytest.raises(QueryFailed):
            jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=sql)
    with pytest.raises((PolicyDenied, BudgetExhausted)):
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=sql)
    spends = {(s.job_id, s.epsilon, s.delta) for s in list_spends(node.store, agreement)}
    logged = {
        (e["job_id"], Decimal(e["epsilon"]), Decimal(e["delta"])) for e in entries(node, "dp.spent")
    }
    assert len(spends) == 2 and logged == spends


# --- 7. replays re-check the agreement -----------------------------------------------------------


def test_replay_after_the_agreement_expired_is_denied(provider: tuple[Node, str]) -> None:
    node, _ = provider
    expires = datetime.now(UTC) + timedelta(days=1)
    agreement = agree(provider, expires=expires.isoformat())
    first = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL, job_id="r-1")
    again = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL, job_id="r-1")
    assert again.replayed and again.ipc == first.ipc
    later = expires + timedelta(days=1)
    with pytest.raises(PolicyDenied, match=r"dateTime|expire|time"):
        jobs.run_job(
            node, agreement_id=agreement, consumer=CONSUMER, sql=SQL, job_id="r-1", now=later
        )
    [denied] = entries(node, "job.replay_denied")
    assert denied["job_id"] == "r-1" and "dateTime" in {r["left"] for r in denied["reasons"]}
    assert job_state(node, "r-1") == jobs.SUCCEEDED  # the original outcome stands
    assert len(usage_rows(node)) == 1


def test_replay_after_the_agreement_was_terminated_is_denied(provider: tuple[Node, str]) -> None:
    node, _ = provider
    agreement = agree(provider)
    jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL, job_id="t-1")
    with node.store.write() as session:
        row = session.get(ContractAgreementRow, agreement)
        assert row is not None
        neg = session.get(ContractNegotiationRow, row.negotiation_id)
        assert neg is not None
        neg.state = NegotiationState.TERMINATED
    with pytest.raises(PolicyDenied, match="TERMINATED, not FINALIZED"):
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL, job_id="t-1")
    assert [e["job_id"] for e in entries(node, "job.replay_denied")] == ["t-1"]


def test_replay_of_the_last_allowed_job_is_still_served(provider: tuple[Node, str]) -> None:
    node, _ = provider  # what the original run consumed is not charged again
    agreement = agree(provider, max_jobs=1)
    first = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL, job_id="l-1")
    again = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL, job_id="l-1")
    assert again.replayed and again.ipc == first.ipc
    dp_agreement = agree(provider, "dp-stats", dp=DP, epsilon=0.5, delta=1e-5, min_group_size=5)
    sql = "SELECT count(*) AS n FROM taxpayers"
    one = jobs.run_job(node, agreement_id=dp_agreement, consumer=CONSUMER, sql=sql, job_id="l-2")
    two = jobs.run_job(node, agreement_id=dp_agreement, consumer=CONSUMER, sql=sql, job_id="l-2")
    assert two.replayed and two.ipc == one.ipc
    assert entries(node, "job.replay_denied") == []


def test_a_job_sent_while_every_worker_is_busy_can_be_sent_again(
    provider: tuple[Node, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing runs while every worker is busy and the claim is given back: the same id sent
    again later runs, rather than replaying a stored 503 that says 'try again'."""
    from dataspace.compute import sandbox
    from dataspace.compute.errors import SandboxBusy

    node, _ = provider
    agreement = agree(provider)
    monkeypatch.setattr(sandbox, "_running", 10**6)  # every slot taken by other queries
    with pytest.raises(SandboxBusy) as busy:
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL, job_id="busy")
    assert busy.value.http_status == 503
    monkeypatch.undo()
    outcome = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL,
                           job_id="busy")
    assert outcome.table.num_rows > 0 and job_state(node, "busy") == jobs.SUCCEEDED


def test_busy_found_after_the_claim_gives_the_id_back(
    provider: tuple[Node, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last slot taken between the claim and the worker: nothing ran, the id is given
    back (no stored FAILED to replay), and the same id sent again runs."""
    from dataspace.compute import sandbox
    from dataspace.compute.errors import SandboxBusy

    node, _ = provider
    agreement = agree(provider)
    real = jobs.run_query

    def taken_meanwhile(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(sandbox, "_running", 10**6)
        try:
            return real(*args, **kwargs)
        finally:
            monkeypatch.setattr(sandbox, "_running", 0)

    monkeypatch.setattr(jobs, "run_query", taken_meanwhile)
    with pytest.raises(SandboxBusy):
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL, job_id="race")
    assert usage_service.list_usage(node, agreement_id=agreement) == []  # nothing metered
    monkeypatch.setattr(jobs, "run_query", real)
    outcome = jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL,
                           job_id="race")
    assert outcome.table.num_rows > 0 and job_state(node, "race") == jobs.SUCCEEDED


def test_a_job_whose_claiming_process_died_is_failed_at_once(
    provider: tuple[Node, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No lease to wait out: the process that claimed the job holds its lock file in the
    node's alive folder while it lives; a job of a killed process is interrupted now."""
    node, _ = provider
    agreement = agree(provider)
    with monkeypatch.context() as m:
        crash_while_running(m, "dataspace.services.jobs.run_query")
        with pytest.raises(_Crash):
            jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL, job_id="k-1")
    with subprocess.Popen(  # another process of this node, e.g. a server
        [sys.executable, "-c", "import sys\n"
         "from dataspace.services.node import open_node\n"
         "from dataspace.scratch import process_tag\n"
         "open_node(sys.argv[1])\n"
         "print(process_tag(), flush=True)\n"
         "sys.stdin.read()\n", str(node.root)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as other:
        _claimed_by_a_process_then_killed(node, other)
    [failed] = entries(node, "job.failed")
    assert failed["job_id"] == "k-1" and failed["code"] == "job_interrupted"
    with pytest.raises(jobs.JobInterrupted, match="process running it ended"):
        jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, sql=SQL, job_id="k-1")


def _claimed_by_a_process_then_killed(node: Node, other: subprocess.Popen[str]) -> None:
    try:
        assert other.stdout is not None
        tag = other.stdout.readline().strip()
        with node.store.write() as session:  # that process claimed it
            row = session.get(JobRow, "k-1")
            assert row is not None and row.claimed_by == process_tag()
            row.claimed_by = tag
        assert jobs.sweep_stale(node) == []  # alive, within the lease: in flight
        other.kill()
        other.wait()
        assert jobs.sweep_stale(node) == ["k-1"]  # gone: failed at once, the lease unspent
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()


def test_the_engines_own_words_go_to_the_providers_log_only(
    provider: tuple[Node, str], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """They can quote a row's value: never to the consumer, but the provider, who owns the
    data, finds them in its server log under the job id."""
    node, _ = provider
    agreement = agree(provider)

    def engine_error(running: RunningQuery) -> Any:
        running.cancel()
        failed = QueryFailed("the query failed while running; no result was released")
        failed.internal_detail = "Conversion Error: Could not convert string 'P00017' to INT32"
        raise failed

    with monkeypatch.context() as m, caplog.at_level("WARNING", logger="dataspace.node"):
        m.setattr("dataspace.compute.sandbox.RunningQuery.result", engine_error)
        with pytest.raises(QueryFailed) as caught:
            jobs.run_job(node, agreement_id=agreement, consumer=CONSUMER, job_id="eng-1",
                         sql="SELECT count(*) AS n FROM taxpayers")
    assert "P00017" not in str(caught.value.to_dict())
    [line] = [r.getMessage() for r in caplog.records if "eng-1" in r.getMessage()]
    assert "the engine said: Conversion Error: Could not convert string 'P00017'" in line
    [failed] = entries(node, "job.failed")
    assert failed["job_id"] == "eng-1" and "P00017" not in str(failed)
    assert job_state(node, "eng-1") == jobs.FAILED
