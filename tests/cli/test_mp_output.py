"""`dataspace psi` and `aggregate` on the command line: what they refuse before running, and
what a DP answer is worth, not only its rounding error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dataspace.services import multiparty


def _answer(values: dict[str, float], **result: Any) -> Callable[..., dict[str, Any]]:
    def run_aggregate(node: Any, **kw: Any) -> dict[str, Any]:
        return {"id": "job-agg-1", "state": "SUCCEEDED",
                "result": {"op": "sum", "columns": list(values), "values": values,
                           "parties": 3, **result}}
    return run_aggregate


def test_a_dp_sum_shows_its_noise_and_warns_when_it_drowns_the_value(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("init", tmp_path / "n", "--name", "bank").exit_code == 0
    args = ["--node", tmp_path / "n", "aggregate", "--agreement", "a1", "--columns", "vat,tax"]
    monkeypatch.setattr(multiparty, "run_aggregate", _answer(
        {"vat": -1786254119.885239, "tax": 5.0e10}, count=None, error_bound=2.29e-05,
        epsilon=1.0, noise_error95=8227965472.0))
    shown = cli(*args, "--epsilon", "1")
    assert shown.exit_code == 0, shown.stderr
    out = " ".join(shown.stdout.split())
    assert "count withheld (DP)" in out and "None" not in out
    assert "DP noise within ±8.22797e+09 per value (95 %), ε 1.0" in out
    assert "the noise can exceed the value of vat:" in out  # not of tax: 5e10 stands out
    monkeypatch.setattr(multiparty, "run_aggregate", _answer(
        {"vat": 2.5e9}, count=1200, error_bound=2.29e-05, epsilon=None))
    out = " ".join(cli(*args).stdout.split())
    assert "count 1,200 · rounding error ≤ 2.29e-05" in out
    assert "noise" not in out


def test_psi_refuses_out_with_reveal_size_before_the_job_runs(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It ran (and was billed), then failed: 'job ... kept no rows here'."""
    def run_psi(node: Any, **kw: Any) -> dict[str, Any]:
        raise AssertionError("the job must not start")

    monkeypatch.setattr(multiparty, "run_psi", run_psi)
    assert cli("init", tmp_path / "n", "--name", "bank").exit_code == 0
    shown = cli("--node", tmp_path / "n", "psi", "--agreement", "a1", "--on", "credit_code:uscc",
                "--dataset", "loans", "--reveal", "size", "--out", tmp_path / "keys.csv")
    assert shown.exit_code == 2
    assert "--reveal size keeps no keys to write to --out" in shown.stderr
    assert not (tmp_path / "keys.csv").exists()


@pytest.mark.parametrize(("states", "code", "said"), [
    (["RUNNING", "SUCCEEDED"], 0, ""),
    (["RUNNING", "FAILED"], 1, ""),
    (["DENIED"], 1, ""),
    (["RUNNING"] * 1000, 124, "still RUNNING after 0.3 s: stopped watching"),
])
def test_job_watch_exits_with_how_the_job_ended(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, states: list[str], code: int,
    said: str,
) -> None:
    """It exited 0 for a failed job and for one still running at --timeout."""
    from dataspace.errors import NotFound

    seen = iter(["RUNNING", *states])  # the first read checks that the job exists

    def get_job(node: Any, job_id: str) -> dict[str, Any]:
        if job_id != "job-w":
            raise NotFound(f"no multi-party job {job_id!r}")
        state = next(seen, states[-1])
        failed = {"node": "grid", "step": -1, "name": "failed", "state": "failed"}
        return {"id": job_id, "action": "psi", "role": "initiator", "state": state,
                "attempt": 1, "peer": "grid", "progress": {"done": 1, "total": 3},
                "steps": [failed] if state == "FAILED" else [], "params": {"mode": "me"},
                "error": {"message": "grid did not answer"} if state == "FAILED" else None,
                "result": None}

    monkeypatch.setattr(multiparty, "get_job", get_job)
    assert cli("init", tmp_path / "n", "--name", "bank").exit_code == 0
    shown = cli("--node", tmp_path / "n", "job", "watch", "job-w", "--interval", "0.05",
                "--timeout", "0.3")
    assert shown.exit_code == code, shown.stderr
    assert said in " ".join(shown.stderr.split())
    unknown = cli("--node", tmp_path / "n", "job", "watch", "job-x")
    assert unknown.exit_code == 4 and "no multi-party job 'job-x'" in unknown.stderr


def test_a_failed_step_is_said_once() -> None:
    from dataspace.cli.mp import _step_line

    assert _step_line({"node": "grid", "name": "failed", "state": "failed"}, "FAILED") == (
        "grid: failed [FAILED]")
    assert _step_line({"node": "tax", "name": "open", "state": "done"}, "RUNNING") == (
        "tax: open done [RUNNING]")


def test_job_show_prints_a_result_as_lines_and_a_prediction_as_a_multi_party_job(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It printed the result as a Python dict, and a prediction as a query ("sql: None")."""
    from dataspace.services import jobs, predict

    view = {"id": "job-p", "action": "federated-predict", "role": "initiator",
            "state": "SUCCEEDED", "attempt": 1, "peer": "tax-bureau,grid",
            "progress": {"done": 3, "total": 3}, "steps": [], "params": {}, "error": None,
            "result": {"rows": 120, "scores_file": "scores/job-p.parquet", "model": "m-1",
                       "per_peer": [{"peer": "grid", "rows": 120}], "note": None}}
    monkeypatch.setattr(jobs, "get_job", lambda node, job_id: {**view, "sql": None})
    monkeypatch.setattr(predict, "get_job", lambda node, job_id: view)
    assert cli("init", tmp_path / "n", "--name", "bank").exit_code == 0
    shown = cli("--node", tmp_path / "n", "job", "show", "job-p")
    assert shown.exit_code == 0, shown.stderr
    out = shown.stdout
    assert "federated-predict" in out and "sql:" not in out and "{'" not in out
    assert "rows: 120" in out and "scores_file: scores/job-p.parquet" in out
    assert 'per_peer: [{"peer": "grid", "rows": 120}]' in out and "note" not in out
