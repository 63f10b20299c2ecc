"""Metrics, confidence intervals and the label-leak check the scenarios share (numpy only)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


def _ranks(s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks of ``s``; ties get their average rank."""
    order = s.argsort(kind="mergesort")
    sorted_s = s[order]
    first = np.r_[True, sorted_s[1:] != sorted_s[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(s)] - 1
    ranks = np.empty(len(s))
    ranks[order] = ((starts + ends) / 2 + 1)[np.cumsum(first) - 1]
    return ranks


def auc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """ROC AUC by ranks (ties get average ranks)."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    return float((_ranks(s)[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def pr_auc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Average precision (area under the precision-recall curve, step-wise)."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    if not y.any():
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    hits = y[order].astype(float)
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def ks(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Kolmogorov–Smirnov statistic of a risk score: max over thresholds of TPR − FPR, flagging
    every entity whose score is at or above the threshold (higher score = more likely positive;
    tied scores are flagged together; 0 when no threshold beats flagging nobody)."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    sorted_s = s[order]
    last = np.r_[sorted_s[1:] != sorted_s[:-1], True]  # the end of each group of tied scores
    tpr = np.cumsum(y[order])[last] / pos
    fpr = np.cumsum(~y[order])[last] / neg
    return float(max(0.0, np.max(tpr - fpr)))


def ridge_fit(x: Array, y: Array, alpha: float = 1.0) -> Array:
    """Ridge regression with an unpenalised intercept; returns [intercept, *coef]."""
    xa = np.column_stack([np.ones(len(x)), x])
    penalty = alpha * np.eye(xa.shape[1])
    penalty[0, 0] = 0.0
    return np.asarray(np.linalg.solve(xa.T @ xa + penalty, xa.T @ y), dtype=float)


def ridge_from_moments(xtx: Array, xty: Array, alpha: float = 1.0) -> Array:
    """The same ridge solution from the sufficient statistics [1, x]ᵀ[1, x] and [1, x]ᵀy."""
    penalty = alpha * np.eye(xtx.shape[0])
    penalty[0, 0] = 0.0
    return np.asarray(np.linalg.solve(xtx + penalty, xty), dtype=float)


def ridge_predict(beta: Array, x: Array) -> Array:
    return np.asarray(beta[0] + x @ beta[1:], dtype=float)


def bootstrap_ci(
    stat: Callable[[npt.NDArray[np.int64]], float],
    n: int,
    *,
    strata: Sequence[int] | None = None,
    reps: int = 300,
    seed: int = 0,
) -> tuple[float, float]:
    """95% percentile CI of ``stat(indices)`` resampling indices 0..n-1 (within strata)."""
    rng = np.random.default_rng(seed)
    groups = (
        [np.flatnonzero(np.asarray(strata) == g) for g in sorted(set(strata))]
        if strata is not None
        else [np.arange(n)]
    )
    values = []
    for _ in range(reps):
        idx = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        v = stat(idx)
        if np.isfinite(v):
            values.append(v)
    if not values:
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def where_zero(low: float, high: float) -> str:
    """Where a confidence interval lies against 0, as the controls report it."""
    return "covers 0" if low <= 0 <= high else "below 0" if high < 0 else "above 0"


def mean_over_strata(
    stat: Callable[[npt.NDArray[np.int64]], float], strata: npt.ArrayLike
) -> Callable[[npt.NDArray[np.int64]], float]:
    """``stat`` on each stratum's indices (a seed's held-out set), averaged over the strata:
    pass the result to :func:`bootstrap_ci` with the same ``strata``."""
    labels = np.asarray(strata)
    groups = np.unique(labels)

    def pooled(idx: npt.NDArray[np.int64]) -> float:
        where = labels[idx]
        return float(np.mean([stat(idx[where == g]) for g in groups]))

    return pooled


def label_copy_flags(
    features: dict[str, Array], label: Array, *, corr_max: float = 0.95, auc_max: float = 0.97
) -> list[str]:
    """Features that look like copies of the label: |corr| ≥ corr_max, or a single-feature
    AUC (binary labels) beyond auc_max. Such a column is refused, not used."""
    flags = []
    y = np.asarray(label, dtype=float)
    binary = set(np.unique(y)) <= {0.0, 1.0}
    for name, values in features.items():
        x = np.asarray(values, dtype=float)
        ok = np.isfinite(x)
        if ok.sum() < 10 or np.std(x[ok]) == 0 or np.std(y[ok]) == 0:
            continue
        corr = abs(float(np.corrcoef(x[ok], y[ok])[0, 1]))
        single = auc(x[ok], y[ok]) if binary else 0.5
        if corr >= corr_max or max(single, 1 - single) >= auc_max:
            flags.append(name)
    return flags
