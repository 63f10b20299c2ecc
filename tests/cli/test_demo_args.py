"""`dataspace demo` refuses what a scenario cannot run, before any node starts."""

from __future__ import annotations

import pytest

from dataspace.errors import UsageError


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["emergency", "--data", "public"], "emergency has synthetic data only"),
        (["tourism", "--data", "public"], "tourism has synthetic data only"),
        (["finance", "--data", "foo"], "--data is synthetic or public, not 'foo'"),
        (["carbon", "--seed", "-1"], "--seed must be 0 or more"),
        # the training job's seed is a signed 64-bit integer: refused here, not 45 s in
        (["finance", "--seed", str(2**63 - 1)], "--seed must be at most 9223372036854775806"),
    ],
)
def test_bad_demo_arguments_are_one_clear_line(cli, args: list[str], says: str) -> None:
    result = cli("demo", *args)
    assert result.exit_code == UsageError.exit_code, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr
