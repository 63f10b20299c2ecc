from __future__ import annotations

import pytest

from dataspace.errors import UsageError
from dataspace.settings import SETTINGS, Limits


def test_every_setting_has_a_default_and_help() -> None:
    for setting in SETTINGS:
        assert setting.help and setting.default is not None


def test_overrides_replace_defaults() -> None:
    assert Limits({"classify_min_share": 0.9}).classify_min_share == 0.9
    assert Limits({"classify_min_share": 1}).classify_min_share == 1


def test_unknown_limit_is_refused_with_the_known_ones_listed() -> None:
    with pytest.raises(UsageError, match="unknown limit 'k'") as info:
        Limits({"k": 5})
    assert "classify_min_share" in str(info.value)


def test_wrongly_typed_limit_is_refused() -> None:
    with pytest.raises(UsageError, match="must be int"):
        Limits({"import_threads": "two"})


@pytest.mark.parametrize(("key", "value", "says"), [
    ("import_threads", 0, "must be positive"),
    ("import_max_line_bytes", -5, "must be positive"),
    ("sandbox_timeout_seconds", float("nan"), "must be positive"),
    ("job_lease_seconds", float("inf"), "must be positive"),
    ("classify_min_share", 1.5, "must be in (0, 1]"),
])
def test_a_limit_out_of_range_is_refused_with_its_default(key: str, value: float,
                                                         says: str) -> None:
    with pytest.raises(UsageError, match=f"'{key}' {says}".replace("(", r"\(")) as refused:
        Limits({key: value})
    assert f"default {dict(Limits())[key]!r}" in str(refused.value.hint)


def test_every_default_is_in_range() -> None:
    assert Limits(dict(Limits())) == Limits()


@pytest.mark.parametrize("key", ["profile_top_values", "sandbox_kill_grace_seconds",
                                 "peer_denied_log_per_minute"])
def test_zero_is_kept_where_it_means_something(key: str) -> None:
    assert Limits({key: 0})[key] == 0
    with pytest.raises(UsageError, match=f"'{key}' must be 0 or more"):
        Limits({key: -1})
