"""A provider's own checks when a (possibly malicious) initiator opens a training job.

Real nodes and agreements, in process; the initiator's steps reach the provider's handler as
the signed peer route hands them over (``mp_protocols.dispatch`` with the verified caller)."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import dataspace.services.train_party  # noqa: F401  (registers the training protocols)
from dataspace.errors import DataspaceError, UsageError
from dataspace.policy import PolicyDenied, from_template
from dataspace.policy.model import Constraint, Operator
from dataspace.scenarios.cluster import create
from dataspace.services import datasets, mp_party, mp_protocols
from dataspace.services import models as model_store
from dataspace.services.mp_wire import MultipartyFailed, pack_frame, unpack_frame
from dataspace.services.node import Node, open_node
from dataspace.services.train_net import Mailbox
from dataspace.services.train_roles import Spec
from dataspace.store.models_compute import JobRow
from helpers.agreements import make_agreement

BANK, TAX, ROWS = "bank", "tax-bureau", 200
COLUMNS = ["vat", "income", "payroll"]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, Any]]:
    create(tmp_path, [BANK, TAX], space="s", dealer=True, actor="test")
    bank, tax = open_node(tmp_path / BANK), open_node(tmp_path / TAX)
    rng = np.random.default_rng(3)
    lines = [",".join(["credit_code", *COLUMNS, "y"])]
    for i in range(ROWS):
        values = ",".join(f"{v:.3f}" for v in rng.normal(50, 10, size=len(COLUMNS)))
        lines.append(f"C{i:05d},{values},{int(rng.random() < 0.4)}")
    path = tmp_path / "companies.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dataset = datasets.add(tax, path, name="companies", actor="test")["id"]
    agreement = make_agreement(tax, BANK, consumer=bank, dataset_id=dataset,
                               purpose="credit-risk",
                               offer=from_template("federated-train", purposes=["finance"]))
    once = make_agreement(tax, BANK, consumer=bank, dataset_id=dataset, purpose="credit-risk",
                          offer=from_template("federated-train", purposes=["finance"],
                                              max_jobs=1))
    share = make_agreement(tax, BANK, consumer=bank, dataset_id=dataset, purpose="credit-risk",
                           offer=from_template("federated-train", purposes=["finance"]),
                           price_terms={"per_job": "10 CNY", "contribution_share": True,
                                        "min_revenue_pool": "1000 CNY"})
    base = from_template("federated-train", purposes=["finance"])
    rule = base.permissions[0]
    k100 = dataclasses.replace(base, permissions=(dataclasses.replace(
        rule, constraints=(*rule.constraints, Constraint("minGroupSize", Operator.GTEQ, 100))),))
    at_least_100 = make_agreement(tax, BANK, consumer=bank, dataset_id=dataset,
                                  purpose="credit-risk", offer=k100)
    eps10 = make_agreement(tax, BANK, consumer=bank, dataset_id=dataset, purpose="credit-risk",
                           offer=from_template("federated-train", purposes=["finance"],
                                               epsilon=10))
    dp_rule = from_template("federated-train", purposes=["finance"], epsilon=10)
    rule = dp_rule.permissions[0]
    delta6 = make_agreement(tax, BANK, consumer=bank, dataset_id=dataset, purpose="credit-risk",
                            offer=dataclasses.replace(dp_rule, permissions=(dataclasses.replace(
                                rule, constraints=(*rule.constraints,
                                                   Constraint("delta", Operator.LTEQ, 1e-6))),)))
    align = _aligned(tax, peer=BANK, dataset="companies")
    try:
        yield {"bank": bank, "tax": tax, "agreement": agreement, "align": align, "once": once,
               "share": share, "k100": at_least_100, "eps10": eps10, "delta6": delta6}
    finally:
        bank.close()
        tax.close()


def _aligned(node: Node, *, peer: str, dataset: str) -> str:
    """What a finished PSI align job with ``peer`` leaves here: its job row and every row of
    the dataset, in order."""
    align = uuid.uuid4().hex
    mp_party.write_rows(node, align, np.arange(ROWS), ordered=True)
    with node.store.write() as session:
        session.add(JobRow(id=align, role="provider", agreement_id="psi-agreement", peer=peer,
                           action="psi", state="SUCCEEDED", request={},
                           result_meta={"result": {"mode": "align", "dataset": dataset}},
                           created_at=datetime.now(UTC)))
    return align


def _step(node: Node, caller: str, header: dict[str, Any], blobs: list[bytes] | None = None
          ) -> dict[str, Any]:
    header, _ = unpack_frame(mp_protocols.dispatch(node, caller, pack_frame(header, blobs or [])))
    return header


def _open_vertical(env: dict[str, Any], **changes: Any) -> tuple[str, dict[str, Any]]:
    job = uuid.uuid4().hex
    spec = {"family": "vlr", "parties": [BANK, TAX], "widths": {BANK: 2, TAX: 3},
            "columns": {BANK: ["a", "b"], TAX: COLUMNS}, "dealer": "operator", "rows": ROWS,
            "holdout": 0.25, "seed": 0, "params": {"epochs": 1}, "contribution": False,
            **changes}
    header = {"protocol": "federated-train", "job_id": job, "name": "open",
              "spec": Spec.from_dict(job, spec).to_dict(), "agreement_id": env["agreement"],
              "kind": "federated-train", "features": COLUMNS, "align": env["align"],
              "select": None}
    return job, header


def _running(node: Node, job: str) -> bool:
    with node.store.read() as session:
        row = session.get(JobRow, job)
        return row is not None and row.state == "RUNNING"


def test_an_honest_open_is_accepted(env: dict[str, Any]) -> None:
    job, header = _open_vertical(env)
    assert _step(env["tax"], BANK, header)["state"] == "open"
    assert _running(env["tax"], job)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        # the initiator as dealer knows every mask: it would unmask the provider's features
        ({"dealer": BANK}, "not this space's dealer"),
        ({"dealer": TAX}, "not this space's dealer"),
        ({"family": "gbdt"}, "unknown model family"),
        ({"parties": [TAX, BANK]}, "must be the job's label party"),
        ({"rows": ROWS + 1}, "this node has 200"),
        ({"holdout": 0.95}, "holdout must lie in"),
        ({"params": {"epochs": 1, "bogus": 1}}, "unknown vlr parameter"),
        # placeholders of the others' blocks would be 200 × 2e7 values
        ({"widths": {BANK: 20_000_000, TAX: 3}}, "pass this node's limit"),
        ({"widths": {BANK: 0, TAX: 3}}, "each at least 1"),
        # the part records spec.columns and prediction reads them: another order than the
        # loaded features would apply each weight to another column
        ({"columns": {BANK: ["a", "b"], TAX: ["payroll", "vat", "income"]}},
         "differ from the features"),
    ],
)
def test_a_provider_refuses_what_its_own_checks_do_not_allow(
    env: dict[str, Any], changes: dict[str, Any], message: str
) -> None:
    job, header = _open_vertical(env, **changes)
    with pytest.raises(DataspaceError, match=message):
        _step(env["tax"], BANK, header)
    assert not _running(env["tax"], job)


def test_training_and_prediction_need_the_agreements_least_rows(env: dict[str, Any]) -> None:
    """minGroupSize 100: a provider's share of a score over three rows is those rows' values
    (with one column, the column itself up to a linear map)."""
    job, header = _open_vertical(env, rows=3)
    header.update(agreement_id=env["k100"], select=[5, 6, 7])
    with pytest.raises(DataspaceError, match="need at least 100"):
        _step(env["tax"], BANK, header)
    assert not _running(env["tax"], job)
    job, header = _open_vertical(env)  # all 200 rows: enough
    header.update(agreement_id=env["k100"])
    assert _step(env["tax"], BANK, header)["state"] == "open"
    model = uuid.uuid4().hex
    spec = Spec.from_dict(model, {"family": "vlr", "parties": [BANK, TAX],
                                  "widths": {BANK: 2, TAX: 3},
                                  "columns": {BANK: ["a", "b"], TAX: COLUMNS},
                                  "dealer": "operator", "rows": ROWS})
    part = {"party": TAX, "columns": COLUMNS, "weights": [0.1, 0.2, 0.3], "mean": [50] * 3,
            "scale": [10] * 3, "clip": 8.0, "intercept": None}
    digest = model_store.stage(env["tax"], model_id=model, family="vlr", role="participant",
                               initiator=BANK, part=part, info={"params": spec.to_dict()})
    model_store.finalize(env["tax"], model, {"parts": {TAX: {"sha256": digest}}}, actor="test")
    predict_job = uuid.uuid4().hex
    with pytest.raises(DataspaceError, match="scores at least 100 rows"):
        _step(env["tax"], BANK, {
            "protocol": "federated-predict", "job_id": predict_job, "name": "open",
            "model_id": model, "agreement_id": env["k100"], "kind": "federated-train",
            "align": env["align"], "select": [17], "rows": 1, "idle_timeout": 60.0})
    assert not _running(env["tax"], predict_job)


def test_a_missing_column_does_not_reveal_the_others(env: dict[str, Any]) -> None:
    asked = ["vat", "no_such_column", "payroll"]
    _job, header = _open_vertical(env, columns={BANK: ["a", "b"], TAX: asked})
    header["features"] = asked
    with pytest.raises(DataspaceError) as refused:
        _step(env["tax"], BANK, header)
    text = f"{refused.value.message} {refused.value.hint}"
    assert "no_such_column" in text and "income" not in text


def _fedavg_open(env: dict[str, Any], holdout: float) -> tuple[str, dict[str, Any]]:
    job = uuid.uuid4().hex
    params = {"dim": 3, "model": "logistic", "holdout": holdout, "seed": 0, "rounds": 1,
              "local_epochs": 1, "batch_size": 1, "learning_rate": 1.0, "l2": 0.0,
              "update_bound": 1e6, "initiator_trains": True}  # a third contributor
    return job, {"protocol": "fedavg", "job_id": job, "name": "open",
                 "agreement_id": env["agreement"], "features": COLUMNS, "label": "y",
                 "params": params}


def test_fedavg_refuses_a_holdout_that_leaves_a_handful_of_rows(env: dict[str, Any]) -> None:
    job, header = _fedavg_open(env, (ROWS - 1) / ROWS)  # one training row: its update is it
    with pytest.raises(DataspaceError, match="at least 10 of this node's rows"):
        _step(env["tax"], BANK, header)
    assert not _running(env["tax"], job)


@pytest.mark.parametrize(("name", "parties", "message"), [
    ("round#1", [1], "at least one other"),   # alone in the sum: the sum is its update
    ("round#2", [1, 2], "outside the job's 1 rounds"),
])
def test_fedavg_rounds_aggregate_with_others_within_the_jobs_rounds(
    env: dict[str, Any], name: str, parties: list[int], message: str
) -> None:
    job, header = _fedavg_open(env, 0.25)
    assert _step(env["tax"], BANK, header)["train_rows"] == 150
    round_header = {**_fedavg_round(job, parties), "name": name}
    with pytest.raises(DataspaceError, match=message):
        _step(env["tax"], BANK, round_header, [np.zeros(4).tobytes()])


@pytest.mark.parametrize(("peer", "dataset", "message"), [
    ("power-grid", "companies", "run with another member"),
    (BANK, "other-dataset", "aligned another dataset"),
])
def test_a_provider_trains_only_on_rows_it_aligned_with_the_initiator(
    env: dict[str, Any], peer: str, dataset: str, message: str
) -> None:
    job, header = _open_vertical(env)
    header["align"] = _aligned(env["tax"], peer=peer, dataset=dataset)
    with pytest.raises(DataspaceError, match=message):
        _step(env["tax"], BANK, header)
    assert not _running(env["tax"], job)


def _fedavg_round(job: str, parties: list[int], other: str = "operator") -> dict[str, Any]:
    members = [[1, TAX], [2, other]][: len(parties)]
    return {"protocol": "fedavg", "job_id": job, "name": "round#1", "session": "00" * 16,
            "parties": parties, "members": members, "index": 1, "bound": 1e6, "bits": 16,
            "total": 2}


@pytest.mark.parametrize("name", ["round#1", "eval"])
def test_a_round_bound_below_the_update_is_clipped_not_refused(
    env: dict[str, Any], name: str
) -> None:
    """A refusal beyond the initiator's bound answered "is your largest update above B?" --
    a bisection over jobs read it, each probe free under a one-job agreement."""
    job, header = _fedavg_open(env, 0.25)
    _step(env["tax"], BANK, header)
    tiny = {**_fedavg_round(job, [1, 2]), "name": name, "bound": 1e-3}
    assert _step(env["tax"], BANK, tiny, [np.ones(4).tobytes()])  # answered, masked


@pytest.mark.parametrize("bound", [float("nan"), float("inf"), 0.0, -1.0])
def test_a_round_bound_that_is_no_positive_number_is_refused(
    env: dict[str, Any], bound: float
) -> None:
    job, header = _fedavg_open(env, 0.25)
    _step(env["tax"], BANK, header)
    with pytest.raises(DataspaceError, match="not a positive number"):
        _step(env["tax"], BANK, {**_fedavg_round(job, [1, 2]), "bound": bound},
              [np.zeros(4).tobytes()])


def test_without_dp_a_provider_refuses_a_round_of_two_contributors(env: dict[str, Any]) -> None:
    """Every provider sees the next model: with one other provider and no data of the
    initiator's, that provider subtracts its own update from the step and reads this one's."""
    job, header = _fedavg_open(env, 0.25)
    header["params"]["initiator_trains"] = False
    _step(env["tax"], BANK, header)
    with pytest.raises(DataspaceError, match="needs three contributors"):
        _step(env["tax"], BANK, _fedavg_round(job, [1, 2]), [np.zeros(4).tobytes()])
    job, header = _fedavg_open(env, 0.25)  # the evaluation's sums reach the initiator only
    header["params"]["initiator_trains"] = False
    _step(env["tax"], BANK, header)
    eval_header = {**_fedavg_round(job, [1, 2]), "name": "eval"}
    assert _step(env["tax"], BANK, eval_header, [np.zeros(4).tobytes()])


def test_fedavg_refuses_a_sum_whose_other_party_is_the_initiator(env: dict[str, Any]) -> None:
    job, header = _fedavg_open(env, 0.25)
    _step(env["tax"], BANK, header)
    with pytest.raises(DataspaceError, match="lists itself as a party"):
        _step(env["tax"], BANK, _fedavg_round(job, [1, 2], other=BANK),
              [np.zeros(4).tobytes()])


def test_a_refused_step_releases_nothing_and_keeps_no_slot(env: dict[str, Any]) -> None:
    tax = env["tax"]
    job, header = _fedavg_open(env, 0.25)
    header["agreement_id"] = env["once"]
    _step(tax, BANK, header)
    with pytest.raises(DataspaceError, match="outside the job's 1 rounds"):
        _step(tax, BANK, {**_fedavg_round(job, [1, 2]), "name": "round#5"},
              [np.zeros(4).tobytes()])
    mp_party.handle_abort(tax, BANK, job, "test over")
    again, header = _fedavg_open(env, 0.25)  # the slot is free: nothing had left
    header["agreement_id"] = env["once"]
    _step(tax, BANK, header)
    assert _running(tax, again)


def test_a_job_aborted_after_its_outputs_left_still_counts_against_the_agreement(
    env: dict[str, Any],
) -> None:
    tax = env["tax"]
    # a job that failed while opening released nothing: it does not take the one slot
    job, header = _fedavg_open(env, 0.95)
    header["agreement_id"] = env["once"]
    with pytest.raises(DataspaceError, match="at least 10"):
        _step(tax, BANK, header)
    # the one slot: this node's masked update leaves in round 1, then the initiator aborts
    job, header = _fedavg_open(env, 0.25)
    header["agreement_id"] = env["once"]
    _step(tax, BANK, header)
    _step(tax, BANK, _fedavg_round(job, [1, 2]), [np.zeros(4).tobytes()])
    mp_party.handle_abort(tax, BANK, job, "changed my mind")
    with tax.store.read() as session:
        assert session.get(JobRow, job).state == "FAILED"
    again, header = _fedavg_open(env, 0.25)
    header["agreement_id"] = env["once"]
    with pytest.raises(DataspaceError, match="count"):
        _step(tax, BANK, header)
    assert not _running(tax, again)


def test_a_peer_cannot_fill_a_providers_memory_with_messages(env: dict[str, Any]) -> None:
    mailbox = Mailbox(env["tax"], uuid.uuid4().hex, TAX, BANK, [BANK, TAX])
    assert mailbox.max_buffered == 1024 * 1024 * 1024  # mp_max_buffered_mb
    mailbox.max_buffered = 1000
    mailbox.accept_push(BANK, 0, ["run/a", "run/b"], [b"x" * 400, b"y" * 400])
    assert mailbox.take("run/a", BANK) == b"x" * 400  # taken messages make room again
    mailbox.accept_push(BANK, 2, ["run/c"], [b"z" * 500])
    with pytest.raises(MultipartyFailed, match="would pass"):
        mailbox.accept_push(BANK, 3, ["run/never-read"], [b"w" * 200])
    with pytest.raises(MultipartyFailed):  # the job has failed here
        mailbox.take("run/b", BANK)


def _fedavg_commit(job: str) -> dict[str, Any]:
    return {"protocol": "fedavg", "job_id": job, "name": "commit",
            "model": {"metrics": {"auc": 0.7}}, "shape": {"dim": 3}}


def test_a_model_part_becomes_final_only_together_with_its_metering(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataspace.services import models as model_store
    from dataspace.services import mp_store
    from dataspace.store.models_federated import FederatedModelRow

    tax = env["tax"]
    job, header = _fedavg_open(env, 0.25)
    _step(tax, BANK, header)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(mp_store, "record_usage", broken)
    with pytest.raises(OSError, match="disk full"):
        _step(tax, BANK, _fedavg_commit(job), [np.zeros(4).tobytes()])
    with tax.store.read() as session:
        row = session.get(FederatedModelRow, job)
        assert row is None or row.state != model_store.FINAL  # not final without its usage
    monkeypatch.undo()
    job, header = _fedavg_open(env, 0.25)
    _step(tax, BANK, header)
    _step(tax, BANK, _fedavg_commit(job), [np.zeros(4).tobytes()])
    with tax.store.read() as session:
        assert session.get(FederatedModelRow, job).state == model_store.FINAL
        assert session.get(JobRow, job).state == "SUCCEEDED"


def test_a_commit_after_the_job_ended_here_leaves_no_model_file(env: dict[str, Any]) -> None:
    """The reaper failed the job (its initiator went quiet) while the commit was on its way:
    the commit is refused, and the θ it staged to carry is removed with its row."""
    from dataspace.services import mp_store
    from dataspace.store.models_federated import FederatedModelRow

    tax = env["tax"]
    job, header = _fedavg_open(env, 0.25)
    _step(tax, BANK, header)
    mp_store.fail(tax, job, MultipartyFailed("no step from the initiator: timed out"),
                  actor="test")
    with pytest.raises(DataspaceError, match="ended"):
        _step(tax, BANK, _fedavg_commit(job), [np.zeros(4).tobytes()])
    with tax.store.read() as session:
        assert session.get(FederatedModelRow, job) is None
    assert not list((tax.data_dir / "models").glob(f"{job}.*"))


@pytest.mark.parametrize(("pool", "message"), [
    (None, "must name one"),
    ("500.00 CNY", "at least 1000"),
    ("1000.001 CNY", "whole units of 0.01 CNY"),
    ("2000 USD", "is in USD"),
])
def test_a_contribution_share_offer_takes_part_only_in_a_pool_it_accepts(
    env: dict[str, Any], pool: str | None, message: str
) -> None:
    job, header = _open_vertical(env, revenue_pool=pool, contribution=True)
    header["agreement_id"] = env["share"]
    with pytest.raises(DataspaceError, match=message):
        _step(env["tax"], BANK, header)
    assert not _running(env["tax"], job)
    job, header = _open_vertical(env, revenue_pool="2000.00 CNY", contribution=True)
    header["agreement_id"] = env["share"]
    assert _step(env["tax"], BANK, header)["state"] == "open"


def test_a_contribution_share_offer_refuses_fedavg(env: dict[str, Any]) -> None:
    _job, header = _fedavg_open(env, 0.25)
    header["agreement_id"] = env["share"]
    with pytest.raises(DataspaceError, match="FedAvg does not measure"):
        _step(env["tax"], BANK, header)


DP = {"clip": 0.5, "noise_multiplier": 5.0, "delta": 1e-5}


def test_dp_fedavg_is_charged_to_an_epsilon_budget_at_open(env: dict[str, Any]) -> None:
    """The federated-train template's ε: a DP-FedAvg job runs under it and its ε (OpenDP's,
    over the job's rounds) is charged before any round; one that would pass it is refused."""
    from dataspace.federated.fedavg import DpFedAvg, dp_epsilon
    from dataspace.privacy.budget import get_budget

    job, header = _fedavg_open(env, 0.25)
    header["params"].update(rounds=3, dp=DP)
    header["agreement_id"] = env["eps10"]
    assert _step(env["tax"], BANK, header)["train_rows"] == 150
    assert _running(env["tax"], job)
    expected = dp_epsilon(DpFedAvg(**DP), 3)
    assert 0 < expected < 10
    spent = get_budget(env["tax"].store, env["eps10"]).epsilon_spent
    assert float(spent) == pytest.approx(expected)
    greedy, header = _fedavg_open(env, 0.25)
    header["params"].update(rounds=3, dp={**DP, "noise_multiplier": 1.0})  # ε ≈ 20
    header["agreement_id"] = env["eps10"]
    with pytest.raises(DataspaceError):
        _step(env["tax"], BANK, header)
    assert not _running(env["tax"], greedy)
    few, header = _fedavg_open(env, (ROWS - 1) / ROWS)  # refused by a later check of its own
    header["params"].update(rounds=3, dp=DP)
    header["agreement_id"] = env["eps10"]
    with pytest.raises(DataspaceError, match="at least 10"):
        _step(env["tax"], BANK, header)
    assert not _running(env["tax"], few)
    assert get_budget(env["tax"].store, env["eps10"]).epsilon_spent == spent  # not charged
    plain, header = _fedavg_open(env, 0.25)  # no DP under an ε agreement: refused
    header["agreement_id"] = env["eps10"]
    with pytest.raises(DataspaceError):
        _step(env["tax"], BANK, header)
    assert not _running(env["tax"], plain)


def test_dp_fedavg_states_its_delta_to_the_policy_and_the_nodes_limit(
    env: dict[str, Any]
) -> None:
    """The initiator states δ, and is charged OpenDP's ε at that δ: δ = 0.5 would be charged a
    ninth of the ε at 1e-5 for next to no privacy. The node caps δ (dp_train_max_delta), and
    an agreement's own δ bound is evaluated -- before, the request carried no δ, so such an
    agreement refused every DP-FedAvg job -- and its δ budget charged."""
    from dataspace.privacy.budget import get_budget

    job, header = _fedavg_open(env, 0.25)
    header["params"].update(rounds=3, dp={**DP, "delta": 0.5})
    header["agreement_id"] = env["eps10"]
    with pytest.raises(DataspaceError, match="above tax-bureau's limit"):
        _step(env["tax"], BANK, header)
    assert not _running(env["tax"], job)
    job, header = _fedavg_open(env, 0.25)
    header["params"].update(rounds=3, dp=DP)  # 1e-5: the node allows it, the agreement not
    header["agreement_id"] = env["delta6"]
    with pytest.raises(PolicyDenied):
        _step(env["tax"], BANK, header)
    job, header = _fedavg_open(env, 0.25)
    header["params"].update(rounds=3, dp={**DP, "delta": 1e-7})
    header["agreement_id"] = env["delta6"]
    assert _step(env["tax"], BANK, header)["train_rows"] == 150
    assert float(get_budget(env["tax"].store, env["delta6"]).delta_spent) == pytest.approx(1e-7)


@pytest.mark.parametrize(
    "dp",
    [{**DP, "noise_multiplier": 0.0}, {**DP, "clip": -1.0}, {**DP, "delta": 0.0},
     {**DP, "delta": 1.5}, {**DP, "noise_multiplier": float("nan")}],
)
def test_dp_fedavg_without_real_noise_is_refused_up_front(
    env: dict[str, Any], dp: dict[str, float]
) -> None:
    from dataspace.services import train_fedavg

    with pytest.raises(DataspaceError, match="DP-FedAvg needs"):
        train_fedavg.config_of({"rounds": 3, "dp": dp})  # what start() checks
    job, header = _fedavg_open(env, 0.25)
    header["params"].update(dp=dp)
    with pytest.raises(DataspaceError, match="DP-FedAvg needs"):
        _step(env["tax"], BANK, header)
    assert not _running(env["tax"], job)


def test_fedavg_needs_two_providers_even_when_the_initiator_holds_data(
    env: dict[str, Any]
) -> None:
    from dataspace.services import train_fedavg

    with pytest.raises(DataspaceError, match="at least two providers"):
        train_fedavg.start(env["bank"], agreements=[env["agreement"]], peers=[TAX], label="y",
                           features={BANK: COLUMNS, TAX: COLUMNS}, dataset="loans",
                           params={"rounds": 3})
    with pytest.raises(DataspaceError, match="needs three contributors"):
        train_fedavg.start(env["bank"], agreements=[env["agreement"], env["agreement"]],
                           peers=[TAX, "power-grid"], label="y",
                           features={TAX: COLUMNS, "power-grid": COLUMNS}, params={"rounds": 3})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"features": ["vat", "income", "no_such_column"]}, "has no column"),
        ({"params": {"model": "mlp", "hidden": "abc"}}, "hidden must be a whole number"),
        ({"params": {"model": "mlp", "hidden": 10**9}}, "hidden must be a whole number"),
        ({"params": {"holdout_column": "no_such_column"}}, "has no column"),
    ],
)
def test_fedavg_bad_input_is_a_clear_refusal(
    env: dict[str, Any], change: dict[str, Any], message: str
) -> None:
    job, header = _fedavg_open(env, 0.25)
    header["params"].update(change.pop("params", {}))
    header.update(change)
    with pytest.raises(DataspaceError, match=message):
        _step(env["tax"], BANK, header)
    assert not _running(env["tax"], job)


@pytest.mark.parametrize(
    ("select", "message"),
    [
        ([5] * 150, "more than once"),  # 150 copies of one row would pass any least-rows bound
        ([-1, *range(1, 20)], "positions 0 to 199"),
        ([*range(1, 20), ROWS], "positions 0 to 199"),
        ([1.5, *range(2, 21)], "integers"),
        (",".join(map(str, range(20))), "integers"),
    ],
)
def test_a_row_selection_names_distinct_aligned_rows(
    env: dict[str, Any], select: Any, message: str
) -> None:
    rows = len(select) if isinstance(select, list) else 20
    job, header = _open_vertical(env, rows=rows)
    header["select"] = select
    with pytest.raises(DataspaceError, match=message):
        _step(env["tax"], BANK, header)
    assert not _running(env["tax"], job)


def test_the_initiators_own_rows_name_a_missing_column_clearly(env: dict[str, Any]) -> None:
    """What start() reads of the initiator's dataset (a 500 with Arrow's words before)."""
    from dataspace.services import jobs, train_fedavg

    with env["tax"].store.read() as session:
        dataset = jobs._dataset(env["tax"], session, "companies")
    with pytest.raises(DataspaceError, match="has no column nope"):
        train_fedavg.load_rows(dataset, ["vat", "nope"], "y", 0.25, None, 0)


def test_contribution_is_measured_for_at_most_four_providers(env: dict[str, Any]) -> None:
    """Every coalition is trained (2^n jobs); the API already takes at most four agreements,
    the service (and so the CLI) holds the same bound, and the value is exact within it."""
    from dataspace.services import training

    peers = [f"p{i}" for i in range(5)]
    with pytest.raises(DataspaceError, match="at most 4 providers"):
        training.start_train(env["bank"], agreements=[env["agreement"]] * 5, peers=peers,
                             model="vlr", label="y", features={}, align=[], contribution=True)


@pytest.mark.parametrize("params", [{"learning_rate": 0.1}, {"l2": 0.5, "min_child_weight": 0.5},
                                    {"trees": 3, "learning_rate": 1}])
def test_vgbdt_takes_fractional_parameters_across_nodes(
    env: dict[str, Any], params: dict[str, Any]
) -> None:
    """Floats cross nodes as their decimal text ("0.1"): the provider reads them as numbers
    (it refused every fractional learning rate before)."""
    from dataspace.services import datasets as ds_service
    from helpers.agreements import pseudonymized

    dataset = ds_service.list_datasets(env["tax"])[0]["id"]
    gbdt = make_agreement(env["tax"], BANK, consumer=env["bank"], dataset_id=dataset,
                          purpose="credit-risk",
                          offer=pseudonymized(from_template("federated-train",
                                                            purposes=["finance"])))
    _job, header = _open_vertical(env, family="vgbdt", params=params)
    header["agreement_id"] = gbdt
    assert _step(env["tax"], BANK, header)["state"] == "open"


@pytest.mark.parametrize(
    ("params", "message"),
    [({"trees": 16.5}, "whole number"), ({"bins": True}, "must be a number"),
     ({"trees": 10**400}, "out of range"),
     ({"l2": float("nan")}, "finite"), ({"learning_rate": "inf"}, "finite")],
)
def test_vgbdt_parameters_are_typed_numbers(params: dict[str, Any], message: str) -> None:
    from dataspace.services.train_roles import check_params

    spec = Spec.from_dict("j", {"family": "vgbdt", "parties": [BANK, TAX],
                                "widths": {BANK: 2, TAX: 3}, "columns": {}, "dealer": "operator",
                                "rows": ROWS, "params": params})
    with pytest.raises(DataspaceError, match=message):
        check_params(spec)


def test_an_open_after_the_dataset_was_removed_is_refused_and_metered(
    env: dict[str, Any],
) -> None:
    from dataspace.services import usage as usage_service

    datasets.remove(env["tax"], "companies", actor="test")
    job, header = _open_vertical(env)
    with pytest.raises(DataspaceError):
        _step(env["tax"], BANK, header)
    assert not _running(env["tax"], job)
    [line] = [u for u in usage_service.list_usage(env["tax"], agreement_id=env["agreement"])
              if u["job_id"] == job]
    assert line["status"] in ("denied", "failed") and line["amount"] == "0"


def test_a_revocation_rolled_back_keeps_the_part_and_its_file(env: dict[str, Any]) -> None:
    from dataspace.services import models as model_store

    tax, model = env["tax"], uuid.uuid4().hex
    model_store.stage(tax, model_id=model, family="fedavg", role="participant", initiator=BANK,
                      part={"theta": [1]}, info={})
    model_store.finalize(tax, model, {}, actor="test")
    with pytest.raises(RuntimeError), tax.store.write() as session:
        assert model_store.revoke_in(session, model, "the job failed", actor="test")
        raise RuntimeError("the rest of the transaction failed")
    assert model_store.load_part(tax, model) == {"theta": [1]}  # final, file intact
    with tax.store.write() as session:
        model_store.revoke_in(session, model, "the job failed", actor="test")
    model_store.drop_revoked_file(tax, model)
    assert not list((tax.data_dir / "models").glob(f"{model}.*"))
    assert model not in {m["id"] for m in model_store.list_models(tax)}



def test_an_abandoned_open_ends_at_its_idle_timeout_and_frees_its_slot(
    env: dict[str, Any]
) -> None:
    """The bank opened and died before `start`: the job stayed RUNNING for good, and a
    one-job agreement refused every later job ("count lteq 1: actual 2")."""
    tax = env["tax"]
    job, header = _open_vertical(env)
    header.update(agreement_id=env["once"], idle_timeout=5.0)
    _step(tax, BANK, header)
    deadline = time.monotonic() + 15
    while _running(tax, job) and time.monotonic() < deadline:
        time.sleep(0.5)
    with tax.store.read() as session:
        row = session.get(JobRow, job)
        assert row is not None and row.state == "FAILED" and "timed out" in (row.error or "")
    again, header = _open_vertical(env)
    header["agreement_id"] = env["once"]
    _step(tax, BANK, header)  # admitted: the abandoned job kept no slot
    assert _running(tax, again)


def test_an_abandoned_fedavg_job_ends_at_its_idle_timeout_unless_kept_alive(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FedAvg provider had no idle timeout: a job whose initiator died after `open` stayed
    RUNNING for good and held a one-job agreement's only slot."""
    from dataspace.services import train_fedavg

    monkeypatch.setattr(train_fedavg, "IDLE_SECONDS", 1.0)
    tax = env["tax"]
    job, header = _fedavg_open(env, 0.25)
    header["agreement_id"] = env["once"]
    _step(tax, BANK, header)
    until = time.monotonic() + 3  # the initiator works alone (other providers' rounds)
    while time.monotonic() < until:
        assert mp_party.handle_alive(tax, BANK, job)["state"] == "RUNNING"
        time.sleep(0.2)
    assert _running(tax, job)
    deadline = time.monotonic() + 10  # ... then falls silent
    while _running(tax, job) and time.monotonic() < deadline:
        time.sleep(0.1)
    with tax.store.read() as session:
        row = session.get(JobRow, job)
        assert row is not None and row.state == "FAILED" and "timed out" in (row.error or "")
    again, header = _fedavg_open(env, 0.25)
    header["agreement_id"] = env["once"]
    _step(tax, BANK, header)  # admitted: the abandoned job kept no slot
    assert _running(tax, again)


def test_a_commit_sent_again_after_its_answer_was_lost_gets_the_same_answer(
    env: dict[str, Any]
) -> None:
    """Refused before ("holds no running job"): the bank then aborted, and the provider
    revoked a model it had committed and metered."""
    from dataspace.services import models as model_store

    tax = env["tax"]
    job, header = _fedavg_open(env, 0.25)
    _step(tax, BANK, header)
    commit = _fedavg_commit(job)
    first = _step(tax, BANK, commit, [np.zeros(4).tobytes()])
    assert _step(tax, BANK, commit, [np.zeros(4).tobytes()]) == first
    assert job in [m["id"] for m in model_store.list_models(tax)]
    with pytest.raises(DataspaceError, match="holds no running FedAvg job"):
        _step(tax, BANK, {**commit, "model": {"metrics": {"auc": 0.9}}},
              [np.zeros(4).tobytes()])  # another request is no resend


def test_a_provider_asks_every_vgbdt_tree_node_to_hold_its_least_rows(
    env: dict[str, Any]
) -> None:
    """min_child_weight 0 and deep trees made nodes of one row: the bank read this node's
    bin of that row in every column. A provider needs min_child_rows at its least rows."""
    from dataspace.services import datasets as ds
    from helpers.agreements import pseudonymized

    tax = env["tax"]
    dataset = ds.list_datasets(tax)[0]["id"]
    agreement = make_agreement(tax, BANK, consumer=env["bank"], dataset_id=dataset,
                               purpose="credit-risk", offer=pseudonymized(
                                   from_template("federated-train", purposes=["finance"])))
    params = {"trees": 2, "max_depth": 12, "min_child_weight": 0, "min_child_rows": 3}
    job, header = _open_vertical(env, family="vgbdt", params=params)
    header["agreement_id"] = agreement
    with pytest.raises(DataspaceError, match=r"min_child_rows is 3.*at least 10 rows"):
        _step(tax, BANK, header)
    assert not _running(tax, job)
    job, header = _open_vertical(env, family="vgbdt", params={**params, "min_child_rows": 10})
    header["agreement_id"] = agreement
    _step(tax, BANK, header)
    assert _running(tax, job)


@pytest.mark.parametrize("idle", ["soon", [1]])
def test_a_prediction_with_an_idle_timeout_that_is_no_number_is_a_clear_refusal(
    env: dict[str, Any], idle: Any
) -> None:
    header = {"protocol": "federated-predict", "job_id": uuid.uuid4().hex, "name": "open",
              "model_id": uuid.uuid4().hex, "agreement_id": env["agreement"],
              "kind": "federated-train", "align": env["align"], "rows": ROWS,
              "idle_timeout": idle}
    with pytest.raises(DataspaceError, match="idle_timeout"):
        _step(env["tax"], BANK, header)


def test_a_text_column_is_refused_without_one_of_its_values(env: dict[str, Any]) -> None:
    """The refusal travels to the initiator: it names the column, never a cell of it."""
    asked = ["vat", "credit_code", "payroll"]
    job, header = _open_vertical(env, columns={BANK: ["a", "b"], TAX: asked})
    header["features"] = asked
    with pytest.raises(DataspaceError, match="column credit_code is not numeric") as refused:
        _step(env["tax"], BANK, header)
    assert "C0" not in f"{refused.value.message} {refused.value.hint}"
    assert not _running(env["tax"], job)


@pytest.mark.parametrize(
    ("label", "features", "message"),
    [
        ("y", {BANK: ["loans", "nosuch"], TAX: COLUMNS}, "has no column nosuch"),
        ("nosuch", {BANK: ["loans"], TAX: COLUMNS}, "has no column nosuch"),
        ("y", {BANK: ["loans", "grade"], TAX: COLUMNS}, "column grade of bank holds VARCHAR"),
        ("grade", {BANK: ["loans"], TAX: COLUMNS}, "column grade of bank holds VARCHAR"),
        ("y", {BANK: ["loans", "loans"], TAX: COLUMNS}, "names bank:loans twice"),
        ("y", {BANK: ["loans"], TAX: ["vat", "vat"]}, "names tax-bureau:vat twice"),
        ("y", {BANK: ["loans", "y"], TAX: COLUMNS}, "label y cannot also be a feature"),
        ("y", {BANK: ["loans"], TAX: COLUMNS, "telco": ["calls"]},
         "names telco: not a party of this job"),
    ],
)
def test_the_initiators_columns_are_checked_before_a_job_exists(
    env: dict[str, Any], tmp_path: Path, label: str, features: dict[str, list[str]],
    message: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Named wrong on the initiator's side: a clear usage error (exit 2) at once, not a job
    that fails later with Arrow's or numpy's words."""
    from dataspace.services import training

    bank = env["bank"]
    rows = ["credit_code,loans,grade,y"] + [f"C{i:05d},{i % 7},{'ABC'[i % 3]},{i % 2}"
                                            for i in range(ROWS)]
    (tmp_path / "own.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    datasets.add(bank, tmp_path / "own.csv", name="own", actor="test")
    # the initiator's finished align job with the tax bureau: every row of "own", in order
    monkeypatch.setattr(training, "_aligned", lambda *_args: ("own", np.arange(ROWS)))
    align = uuid.uuid4().hex
    with bank.store.read() as session:
        before = session.query(JobRow).count()
    with pytest.raises(UsageError, match=message):
        training.start_train(bank, agreements=[env["agreement"]], label=label,
                             features=features, align=[align], contribution=False)
    with bank.store.read() as session:
        assert session.query(JobRow).count() == before  # no job was claimed


def test_a_peer_key_goes_with_on_and_names_a_provider(env: dict[str, Any]) -> None:
    """train --on aligns by PSI first; a provider that names the key otherwise is given its
    column with --peer-key (train had no such option, though the refusal suggested it)."""
    from dataspace.services import training

    with pytest.raises(UsageError, match="--peer-key names a provider's key column for --on"):
        training.start_train(env["bank"], agreements=[env["agreement"]], model="vlr",
                             label="y", features={}, peer_keys={"tax-bureau": "uscc"})
    with pytest.raises(UsageError, match="--peer-key names grid, which takes no part"):
        training.start_train(env["bank"], agreements=[env["agreement"]], model="vlr",
                             label="y", features={}, on="credit_code:uscc", dataset="own",
                             peer_keys={"grid": "uscc"})


def test_a_label_that_is_not_zero_or_one_names_what_it_holds(
    env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said "must hold 0 and 1" and no more: which values, and what to do instead."""
    from dataspace.services import jobs, training

    bank = env["bank"]
    rows = ["credit_code,loans,y"] + [f"C{i:05d},{i % 7},{i % 2}" for i in range(ROWS)]
    (tmp_path / "own.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    datasets.add(bank, tmp_path / "own.csv", name="own", actor="test")
    monkeypatch.setattr(training, "_aligned", lambda *_args: ("own", np.arange(ROWS)))
    job = training.start_train(bank, agreements=[env["agreement"]], label="loans",
                               features={BANK: ["y"], TAX: COLUMNS}, align=[uuid.uuid4().hex],
                               contribution=False)
    with bank.store.read() as session:
        own = jobs._dataset(bank, session, "own")
    with pytest.raises(UsageError) as info:
        training._own_local(bank, own, job)
    assert "must hold 0 and 1 only; it also holds 2, 3, 4, 5, 6" in info.value.message
    assert "--model vlinreg" in str(info.value.hint)
