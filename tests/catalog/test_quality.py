from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from dataspace.catalog.ingest import ImportResult
from dataspace.catalog.profile import profile_parquet
from dataspace.catalog.quality import WEIGHTS, QualityReport, assess_quality, shape
from dataspace.settings import Limits

Write = Callable[..., Path]
Imported = Callable[..., tuple[Path, ImportResult]]

NOW = dt.datetime(2024, 6, 11, 12, 0)


def never(category: str, value: str) -> bool:
    raise AssertionError("no column is classified")


def assess(
    imported: Imported,
    limits: Limits,
    text: str,
    findings: dict[str, str | None] | None = None,
    validator: Callable[[str, str], bool] = never,
    now: dt.datetime = NOW,
) -> QualityReport:
    path, _ = imported("q.csv", text)
    profile = profile_parquet(path, limits=limits)
    return assess_quality(
        path, profile, findings or {}, limits=limits, now=now, validator=validator
    )


def test_completeness_is_the_share_of_filled_cells(imported: Imported, limits: Limits) -> None:
    report = assess(imported, limits, "a,b\n1,\n2,3\n3,\n4,5\n")
    dim = report.dimensions["completeness"]
    assert dim.score == 75.0
    assert dim.figures["columns"] == {"a": 1.0, "b": 0.5}


def test_validity_uses_the_detector_and_the_type(imported: Imported, limits: Limits) -> None:
    text = "phone,qty\n13800138000,1\n13800138001,2\n1380013800,3\n23800138000,4\n13800138004,x\n"
    seen: list[tuple[str, str]] = []

    def validator(category: str, value: str) -> bool:
        seen.append((category, value))
        return value.startswith("1") and len(value) == 11

    report = assess(imported, limits, text, {"phone": "mobile_cn", "qty": None}, validator)
    dim = report.dimensions["validity"]
    cols = dim.figures["columns"]
    assert cols["phone"]["rule"] == "detector:mobile_cn"
    assert (cols["phone"]["checked"], cols["phone"]["invalid"]) == (5, 2)
    assert cols["qty"]["rule"] == "type:number"
    assert cols["qty"]["share"] == 0.8
    assert dim.score == 70.0
    assert {c for c, _ in seen} == {"mobile_cn"}


def test_validity_is_not_applicable_without_rules(imported: Imported, limits: Limits) -> None:
    report = assess(imported, limits, "a,b\n1,x\n2,y\n")
    assert report.dimensions["validity"].score is None


def test_uniqueness_counts_duplicate_rows(imported: Imported, limits: Limits) -> None:
    report = assess(imported, limits, "k,v\n1,a\n1,a\n2,b\n3,c\n")
    dim = report.dimensions["uniqueness"]
    assert dim.score == 75.0
    assert dim.figures["duplicate_rows"] == 1
    assert dim.figures["key_candidates"] == []


def test_uniqueness_finds_key_candidates(imported: Imported, limits: Limits) -> None:
    report = assess(imported, limits, "id,v,w\n1,a,\n2,a,x\n3,b,y\n")
    dim = report.dimensions["uniqueness"]
    assert dim.score == 100.0
    assert dim.figures["key_candidates"] == ["id"]


def test_consistency_finds_mixed_date_formats_and_case(imported: Imported, limits: Limits) -> None:
    text = "d,code\n2024-01-01,AB\n2024-01-02,ab\n2024-01-03,AB\n2024/1/4,AB\n"
    report = assess(imported, limits, text)
    dim = report.dimensions["consistency"]
    assert dim.score == 75.0
    d = dim.figures["columns"]["d"]
    assert (d["dominant"], d["share"]) == ("9-9-9", 0.75)
    assert "mixed date formats" in d["issues"]
    assert "mixed letter case" in dim.figures["columns"]["code"]["issues"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-02", "9-9-9"),
        ("2024/1/2", "9/9/9"),
        ("2024年1月2日", "9汉9汉9汉"),
        ("１３８００１３８０００", "９"),
        ("91110000MA01ABCD2X", "X9"),
        ("Zhang San", "Aa Aa"),
        ("张三", "汉"),
    ],
)
def test_shapes(value: str, expected: str) -> None:
    assert shape(value) == expected


def test_full_width_digits_are_flagged(imported: Imported, limits: Limits) -> None:
    text = "phone\n13800138000\n13800138001\n13800138002\n１３８００１３８００３\n"
    report = assess(imported, limits, text)
    col = report.dimensions["consistency"].figures["columns"]["phone"]
    assert col["share"] == 0.75
    assert "full-width and half-width digits" in col["issues"]


def test_free_text_is_not_judged_for_consistency(imported: Imported, limits: Limits) -> None:
    text = "note\na1-b\nA b c\n12/x\nfoo.bar!\n?? ok\n"
    dim = assess(imported, limits, text).dimensions["consistency"]
    assert dim.score is None
    assert dim.figures["free_text"] == ["note"]


def test_timeliness_decays_with_age(imported: Imported, limits: Limits) -> None:
    text = "d,v\n2024-05-01,1\n2024-06-01,2\n2030-01-01,3\n"  # the future date is ignored
    fresh = assess(imported, limits, text).dimensions["timeliness"]
    assert fresh.score == 100.0
    assert fresh.figures["newest"] == "2024-06-01T00:00:00"
    old = assess(imported, limits, text, now=dt.datetime(2024, 6, 1) + dt.timedelta(days=210))
    assert old.dimensions["timeliness"].score == 50.0
    assert old.dimensions["timeliness"].figures["age_days"] == 210.0


def test_timeliness_reads_text_dates_and_skips_personal_columns(
    imported: Imported, limits: Limits
) -> None:
    text = "filed,birth\n2024/6/1,2024-06-10\n2024/5/2,2024-06-09\n"
    report = assess(imported, limits, text, {"birth": "birth_date"}, lambda c, v: True)
    dim = report.dimensions["timeliness"]
    assert dim.figures["column"] == "filed"
    assert dim.figures["age_days"] == 10.5


def test_timeliness_not_applicable_without_dates(imported: Imported, limits: Limits) -> None:
    report = assess(imported, limits, "a\n1\n2\n")
    assert report.dimensions["timeliness"].score is None
    assert report.dimensions["timeliness"].figures["reason"]


def test_overall_is_the_weighted_mean_of_applicable_dimensions(
    imported: Imported, limits: Limits
) -> None:
    report = assess(imported, limits, "a,b\n1,\n2,3\n")
    applicable = {k: d.score for k, d in report.dimensions.items() if d.score is not None}
    assert applicable == {"completeness": 75.0, "uniqueness": 100.0}
    expected = (WEIGHTS["completeness"] * 75 + WEIGHTS["uniqueness"] * 100) / (
        WEIGHTS["completeness"] + WEIGHTS["uniqueness"]
    )
    assert report.overall == pytest.approx(expected, abs=0.01)


def test_report_is_json_and_carries_no_classified_values(
    imported: Imported, limits: Limits
) -> None:
    text = "phone,city\n13800138000,北京\n13900139000,北京\n"
    report = assess(imported, limits, text, {"phone": "mobile_cn", "city": None}, lambda c, v: True)
    data = json.loads(json.dumps(report.to_dict(), ensure_ascii=False))
    assert data["standard"] == "GB/T 36344-2018"
    assert set(data["dimensions"]) == set(WEIGHTS)
    dumped = json.dumps(data)
    assert "13800138000" not in dumped and "13900139000" not in dumped


def test_codes_with_and_without_letters_are_one_format(imported: Imported, limits: Limits) -> None:
    text = "code\n91330106MA2B3C4D5E\n913301060000000001\n91330106MA2B3C4D6F\n"
    col = assess(imported, limits, text).dimensions["consistency"].figures["columns"]["code"]
    assert col["share"] == 1.0
