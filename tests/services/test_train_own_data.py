"""The initiator checks its own rows before any provider is asked (training._own_local)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataspace.errors import UsageError
from dataspace.services import training
from dataspace.services.train_roles import Spec, split_rows

ROWS = 200


def _job(tmp_path: Path, x: np.ndarray, y: np.ndarray) -> tuple[SimpleNamespace, SimpleNamespace]:
    path = tmp_path / "own.parquet"
    pq.write_table(pa.table({"a": x, "b": np.ones(ROWS), "y": y}), path)
    spec = Spec("job", "vlr", ("bank", "tax"), {"bank": 2, "tax": 1}, {}, "operator", ROWS,
                holdout=0.25, seed=0)
    job = SimpleNamespace(spec=spec, own_features=["a", "b"], label="y",
                          own_positions=list(range(ROWS)))
    return SimpleNamespace(path=path), job


def test_clean_rows_pass(tmp_path: Path) -> None:
    y = np.tile([0.0, 1.0], ROWS // 2)
    dataset, job = _job(tmp_path, np.arange(ROWS, dtype=float), y)
    assert training._own_local(None, dataset, job).block.shape == (ROWS, 2)  # type: ignore[arg-type,union-attr]


def test_a_missing_value_is_named_before_the_job_opens(tmp_path: Path) -> None:
    x = np.arange(ROWS, dtype=float)
    x[7] = np.nan
    dataset, job = _job(tmp_path, x, np.tile([0.0, 1.0], ROWS // 2))
    with pytest.raises(UsageError, match=r"column\(s\) a have missing or infinite values"):
        training._own_local(None, dataset, job)  # type: ignore[arg-type]


def test_one_class_among_the_held_out_rows_is_refused(tmp_path: Path) -> None:
    _, test = split_rows(ROWS, 0.25, 0)
    y = np.zeros(ROWS)
    y[np.setdiff1d(np.arange(ROWS), test)[:20]] = 1.0  # positives among training rows only
    dataset, job = _job(tmp_path, np.arange(ROWS, dtype=float), y)
    with pytest.raises(UsageError, match="held-out rows hold one class"):
        training._own_local(None, dataset, job)  # type: ignore[arg-type]
