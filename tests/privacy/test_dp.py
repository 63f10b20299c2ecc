"""Mechanisms: OpenDP noise of the right size, error bounds, thresholds, the scale cache."""

from __future__ import annotations

import math
import statistics
import time

import numpy as np
import pytest

from dataspace.errors import UsageError
from dataspace.privacy import DpSpec, build_noise, mechanism
from dataspace.privacy.dp import group_threshold

DRAWS = 400


def _mean_abs(values: list[float] | list[int]) -> float:
    return statistics.fmean(abs(v) for v in values)


def test_laplace_sum_noise_has_the_scale_of_sensitivity_over_epsilon() -> None:
    noise = build_noise("laplace", False, 5.0, 0.5)
    assert noise.scale == pytest.approx(10.0, rel=1e-6)
    draws = noise.apply([0.0] * DRAWS)
    # E|Lap(b)| = b; the mean of 400 draws has sd b/20, so ±30% is six standard deviations.
    assert 0.7 * noise.scale <= _mean_abs(draws) <= 1.3 * noise.scale


def test_discrete_laplace_count_noise_is_integer_and_of_the_right_size() -> None:
    noise = build_noise("laplace", True, 1.0, 0.1)
    draws = noise.apply([1000] * DRAWS)
    assert all(isinstance(v, int) for v in draws)
    assert 0.7 * noise.scale <= _mean_abs([v - 1000 for v in draws]) <= 1.3 * noise.scale


def test_gaussian_noise_has_the_scale_opendp_found() -> None:
    noise = build_noise("gaussian", False, 1.0, 0.5, 1e-6)
    expected = noise.scale * math.sqrt(2 / math.pi)
    assert 0.7 * expected <= _mean_abs(noise.apply([0.0] * DRAWS)) <= 1.3 * expected
    assert noise.error95 == pytest.approx(1.959964 * noise.scale)


def test_continuous_laplace_error_bound_is_b_ln_20() -> None:
    noise = build_noise("laplace", False, 2.0, 1.0)
    assert noise.error95 == pytest.approx(noise.scale * math.log(20))


@pytest.mark.parametrize("epsilon", [0.05, 0.5, 1.0, 3.0, 4.0, 1000.0])
def test_a_count_bound_is_the_least_whole_number_covering_95_percent(epsilon: float) -> None:
    """Integer noise: b·ln 20 covered only 92.8-94.4% of discrete Laplace draws (the
    continuous formula ignores the lattice). Exactly, P(|X| <= t) = 1 - 2p^(t+1)/(1+p)."""
    noise = build_noise("laplace", True, 1.0, epsilon)
    p = math.exp(-1 / noise.scale)
    t = int(noise.error95)
    assert noise.error95 == t and 1 - 2 * p ** (t + 1) / (1 + p) >= 0.95
    assert t == 0 or 1 - 2 * p**t / (1 + p) < 0.95
    draws = np.abs(np.asarray(noise.apply([0] * 40_000)))
    assert np.mean(draws <= t) >= 0.94


@pytest.mark.parametrize("epsilon", [0.3, 2.0, 8.0])
def test_a_discrete_gaussian_bound_covers_95_percent_of_draws(epsilon: float) -> None:
    noise = build_noise("gaussian", True, 1.0, epsilon, 1e-6)
    t = noise.error95
    draws = np.abs(np.asarray(noise.apply([0] * 100_000)))
    assert t == int(t) and np.mean(draws <= t) >= 0.947
    assert np.mean(draws <= t - 1) < 0.953  # and it is the least such whole number


def test_noise_is_actually_added() -> None:
    noise = build_noise("laplace", False, 1.0, 1.0)
    assert noise.apply([0.0] * 20) != [0.0] * 20


def test_scale_cache_makes_repeat_queries_cheap() -> None:
    args = ("gaussian", False, 3.0, 0.123456, 1e-7)
    before = build_noise.cache_info()
    cold_start = time.perf_counter()
    first = build_noise(*args)
    cold = time.perf_counter() - cold_start
    warm_start = time.perf_counter()
    second = build_noise(*args)
    warm = time.perf_counter() - warm_start
    assert second is first
    assert build_noise.cache_info().hits == before.hits + 1
    assert warm < 0.001 < cold


def test_threshold_grows_with_contributions_and_honours_k() -> None:
    count = build_noise("laplace", True, 1.0, 1.0)
    tau = group_threshold("laplace", count, 1, 1e-6, 1)
    assert tau == math.ceil(1 + count.scale * math.log(1e6))
    assert group_threshold("laplace", count, 1, 1e-6, 100) == 100
    wide = build_noise("laplace", True, 3.0, 1.0)
    assert group_threshold("laplace", wide, 3, 1e-6, 1) > tau


def test_threshold_needs_delta() -> None:
    with pytest.raises(UsageError, match="delta > 0"):
        group_threshold("laplace", build_noise("laplace", True, 1.0, 1.0), 1, 0.0, 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": 0}, "at least 1e-06"),
        ({"epsilon": 1e-320}, "at least 1e-06"),  # its noise scale would overflow
        ({"epsilon": float("inf")}, "finite"),
        ({"epsilon": 1, "delta": 1.0}, "delta"),
        ({"epsilon": 1, "max_contributions": 0}, "max_contributions"),
        ({"epsilon": 1, "bounds": {"x": (5, 1)}}, "lower <= upper"),
        ({"epsilon": 1, "bounds": {"x": (0, float("nan"))}}, "finite"),
        ({"epsilon": 1, "mechanism": "exponential"}, "unknown DP mechanism"),
        ({"epsilon": True}, "not true/false"),
        ({"epsilon": 1, "delta": False}, "not true/false"),
    ],
)
def test_bad_dp_spec_is_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        DpSpec(**kwargs)  # type: ignore[arg-type]


def test_mechanisms_are_chosen_by_name() -> None:
    assert mechanism("laplace").name == "laplace"
    assert mechanism("gaussian").uses_delta
