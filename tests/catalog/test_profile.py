from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataspace.catalog.ingest import ImportResult
from dataspace.catalog.profile import Profile, profile_parquet
from dataspace.catalog.sample import sample_columns
from dataspace.errors import UnreadableInput
from dataspace.settings import Limits

KNOWN = (
    "id,city,amount,day,name,branch\n"
    "1,北京,10,2024-01-01,张三,001\n"
    "2,北京,20,2024-01-05,李四,002\n"
    "3,上海,30,,王五,001\n"
    "4,,40,2024-02-01,张三,003\n"
)

Write = Callable[..., Path]
Imported = Callable[..., tuple[Path, ImportResult]]
Known = tuple[Path, Profile]


@pytest.fixture
def known(imported: Imported, limits: Limits) -> Known:
    path, _ = imported("known.csv", KNOWN)
    return path, profile_parquet(path, limits=limits)


def test_profile_known_answers(known: Known) -> None:
    _, profile = known
    assert profile.rows == 4
    city = profile.column("city")
    assert (city.type, city.nulls, city.null_rate, city.distinct) == ("VARCHAR", 1, 0.25, 2)
    assert (city.min, city.max) == ("上海", "北京")
    assert city.top_values == [("北京", 2)]  # 上海 is seen once: never listed
    amount = profile.column("amount")
    assert amount.type == "BIGINT"
    assert (amount.min, amount.max, amount.mean) == (10, 40, 25.0)
    assert amount.std is not None and math.isclose(amount.std, math.sqrt(500 / 3))
    day = profile.column("day")
    assert (day.type, day.nulls) == ("DATE", 1)
    assert (day.min, day.max) == (dt.date(2024, 1, 1), dt.date(2024, 2, 1))
    assert profile.column("name").top_values == [("张三", 2)]
    assert profile.column("id").top_values == []  # unique column: nothing to list


def test_to_dict_is_json_and_round_trips(known: Known) -> None:
    _, profile = known
    data = profile.to_dict()
    json.dumps(data)
    day = next(c for c in data["columns"] if c["name"] == "day")
    assert (day["min"], day["max"]) == ("2024-01-01", "2024-02-01")
    again = Profile.from_dict(data)
    assert again.rows == 4
    assert again.column("city").top_values == [("北京", 2)]


def test_redacted_columns_lose_top_values_and_ranges(known: Known) -> None:
    _, profile = known
    data = profile.to_dict(redact={"name", "amount"})
    name = next(c for c in data["columns"] if c["name"] == "name")
    assert name["redacted"] is True
    assert "top_values" not in name and "min" not in name and "max" not in name
    amount = next(c for c in data["columns"] if c["name"] == "amount")
    assert "min" not in amount and amount["mean"] == 25.0
    city = next(c for c in data["columns"] if c["name"] == "city")
    assert city["top_values"] == [{"value": "北京", "count": 2}]
    assert "张三" not in json.dumps(data, ensure_ascii=False)


def test_sensitive_top_values_can_be_skipped_at_compute_time(known: Known, limits: Limits) -> None:
    path, _ = known
    profile = profile_parquet(path, limits=limits, skip_top_values={"name"})
    assert profile.column("name").top_values == []


def test_sample_keeps_the_text_form_and_skips_nulls(known: Known, limits: Limits) -> None:
    path, _ = known
    sample = sample_columns(path, limits=limits)
    assert sorted(sample["branch"]) == ["001", "001", "002", "003"]  # type: ignore[type-var]
    assert sorted(sample["city"]) == ["上海", "北京", "北京"]  # type: ignore[type-var]
    assert sorted(sample["day"]) == ["2024-01-01", "2024-01-05", "2024-02-01"]  # type: ignore[type-var]


def test_sample_is_capped_and_repeatable(imported: Imported) -> None:
    path, _ = imported("many.csv", "v\n" + "".join(f"{i:06d}\n" for i in range(5000)))
    limits = Limits({"classify_sample_rows": 100})
    first = sample_columns(path, limits=limits)["v"]
    assert len(first) == 100
    assert first == sample_columns(path, limits=limits)["v"]
    assert all(isinstance(v, str) and len(v) == 6 for v in first)
    assert len(set(first)) == 100


def test_values_too_large_to_profile_are_bad_input_not_a_crash(tmp_path: Path) -> None:
    """Thirty 2 MB values under a 16 MB limit: an UnreadableInput (422) saying which limit
    to raise, not a 500 naming the staged file."""
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"blob": [os.urandom(1 << 20).hex() for _ in range(30)]}), path)
    limits = Limits({"import_threads": 1, "import_memory_limit_mb": 16})
    with pytest.raises(UnreadableInput, match="within import_memory_limit_mb") as info:
        sample_columns(path, limits=limits)
    assert info.value.http_status == 422 and str(path) not in info.value.message
    assert "import_memory_limit_mb" in (info.value.hint or "")
