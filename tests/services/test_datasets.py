"""Registering datasets through the service layer: atomic, logged, regraded on correction."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataspace.errors import (
    Conflict,
    InputError,
    InvalidName,
    NotFound,
    UnreadableInput,
    UsageError,
)
from dataspace.ledger import log
from dataspace.services import datasets, ledger
from dataspace.services.node import Node

SAMPLES = Path(__file__).resolve().parents[2] / "src" / "dataspace" / "samples"


def _actions(node: Node) -> list[str]:
    return [e["entry"]["action"] for e in ledger.entries(node, 0, 1000)]


def _data_files(node: Node) -> list[str]:
    return sorted(p.name for p in node.data_dir.iterdir())


def test_add_profiles_classifies_grades_and_logs(node: Node) -> None:
    view = datasets.add(
        node, SAMPLES / "sme_loans.csv", name="sme-loans", domain="finance", actor="test"
    )
    columns = view["classification"]["columns"]
    assert columns["统一社会信用代码"]["category"] == "uscc"
    assert columns["法人手机号"]["category"] == "mobile_cn"
    assert view["grading"]["level"] == "general" and view["grading"]["sublevel"] >= 3
    assert 0 < view["quality"]["overall"] <= 100
    # A sensitive column's values never appear in the stored profile.
    phone = next(c for c in view["profile"]["columns"] if c["name"] == "法人手机号")
    assert "top_values" not in phone and "min" not in phone
    assert _actions(node)[-1] == "dataset.added"
    assert _data_files(node) == [f"{view['id']}.parquet"]


def test_a_contradicted_header_hint_does_not_classify_the_column(node: Node) -> None:
    view = datasets.add(node, SAMPLES / "sme_loans.csv", name="loans", actor="test")
    loan_id = view["classification"]["columns"]["loan_id"]
    assert loan_id["findings"], "the header hint is still reported"
    assert loan_id["category"] is None


def test_gbk_file_with_chinese_name_round_trips(node: Node) -> None:
    datasets.add(node, SAMPLES / "tax_records.csv", name="纳税记录", domain="tax", actor="t")
    shown = datasets.show(node, "纳税记录")
    assert shown["source"]["encoding"] in {"gbk", "gb18030"}
    assert "纳税人识别号" in shown["classification"]["columns"]
    assert [d["name"] for d in datasets.list_datasets(node)] == ["纳税记录"]


def _mobiles(n: int = 300) -> list[str]:
    return [f"1{'3589'[i % 4]}{(i * 7919) % 10**9:09d}" for i in range(n)]


def _graded_phone(view: dict[str, Any]) -> tuple[str | None, bool]:
    """The phone column's category, and whether its profile shows no values."""
    profile = next(c for c in view["profile"]["columns"] if c["name"] == "手机号")
    return view["classification"]["columns"]["手机号"]["category"], "min" not in profile


def test_phone_numbers_written_as_floats_are_graded_and_masked(
    node: Node, tmp_path: Path
) -> None:
    """What spreadsheets and pandas write (13812345678.0 in a CSV; a float64 Parquet column
    once a value is missing) is still a column of phone numbers: graded, and no number shown
    in the profile. The CSV keeps its text exactly."""
    phones = _mobiles()
    text = tmp_path / "floats.csv"
    text.write_text("客户,手机号\n" + "".join(f"c{i},{m}.0\n" for i, m in enumerate(phones)),
                    encoding="utf-8")
    view = datasets.add(node, text, name="phones-csv", actor="test")
    assert _graded_phone(view) == ("mobile_cn", True)
    stored = pq.read_table(node.data_dir / f"{view['id']}.parquet").column("手机号")
    assert stored.type == pa.string() and stored[0].as_py() == f"{phones[0]}.0"

    frame = tmp_path / "floats.parquet"
    pq.write_table(pa.table({"客户": [f"c{i}" for i in range(len(phones))],
                             "手机号": [float(m) if i % 10 else None
                                        for i, m in enumerate(phones)]}), frame)
    view = datasets.add(node, frame, name="phones-parquet", actor="test")
    assert _graded_phone(view) == ("mobile_cn", True)


def test_a_json_key_mixing_objects_and_text_is_refused(node: Node, tmp_path: Path) -> None:
    """DuckDB types such a key JSON: the numbers inside the objects would go ungraded."""
    lines = [json.dumps({"k": i, "contact": {"mobile": m}}) for i, m in enumerate(_mobiles())]
    src = tmp_path / "mixed.jsonl"
    src.write_text("\n".join([*lines, json.dumps({"k": -1, "contact": "n/a"})]) + "\n")
    with pytest.raises(UnreadableInput, match=r"nested column\(s\) contact \(JSON\)"):
        datasets.add(node, src, name="mixed", actor="test")
    assert _data_files(node) == [] and "dataset.added" not in _actions(node)


def test_duplicate_name_is_refused_and_nothing_is_left(node: Node) -> None:
    datasets.add(node, SAMPLES / "grid_power.parquet", name="grid", actor="t")
    files, actions = _data_files(node), _actions(node)
    with pytest.raises(Conflict, match="already exists"):
        datasets.add(node, SAMPLES / "grid_power.parquet", name="grid", actor="t")
    assert _data_files(node) == files
    assert _actions(node) == actions


@pytest.mark.parametrize("name", ["../escape", "a/b", ".."])
def test_path_like_names_are_refused_before_any_work(node: Node, name: str) -> None:
    with pytest.raises(InvalidName):
        datasets.add(node, SAMPLES / "grid_power.parquet", name=name, actor="t")
    assert _data_files(node) == []


def test_unreadable_file_leaves_no_trace(node: Node, tmp_path: Path) -> None:
    bad = tmp_path / "image.csv"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    size = ledger.size(node)
    with pytest.raises(UnreadableInput, match=r"image\.csv"):
        datasets.add(node, bad, name="img", actor="t")
    assert _data_files(node) == []
    assert ledger.size(node) == size
    assert datasets.list_datasets(node) == []


def test_failure_after_import_removes_the_file(node: Node, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise UsageError("grading rules unreadable")

    monkeypatch.setattr(datasets, "grade_dataset", broken)
    with pytest.raises(UsageError):
        datasets.add(node, SAMPLES / "grid_power.parquet", name="grid", actor="t")
    assert _data_files(node) == []
    assert datasets.list_datasets(node) == []


def test_unknown_domain_is_refused(node: Node) -> None:
    with pytest.raises(UsageError, match="unknown domain"):
        datasets.add(node, SAMPLES / "grid_power.parquet", name="g", domain="space", actor="t")


def test_reclassify_regrades_and_logs_the_correction(node: Node) -> None:
    datasets.add(node, SAMPLES / "patients.jsonl", name="patients", domain="health", actor="t")
    before = datasets.show(node, "patients")
    assert before["classification"]["columns"]["身份证号"]["category"] == "id_card_cn"
    after = datasets.reclassify(
        node, "patients", column="patient_id", category="id_card_cn", actor="provider"
    )
    column = after["classification"]["columns"]["patient_id"]
    assert column["category"] == "id_card_cn" and column["override"] == "id_card_cn"
    with node.store.read() as session:
        last = log.entries(session, start=log.size(session) - 1, limit=1)[0].to_dict()
    assert last["entry"]["action"] == "dataset.reclassified"
    assert last["payload"]["column"] == "patient_id" and last["payload"]["to"] == "id_card_cn"
    cleared = datasets.reclassify(node, "patients", column="patient_id", category="none", actor="p")
    assert cleared["classification"]["columns"]["patient_id"]["category"] is None


def test_reclassify_refuses_unknown_category_and_column(node: Node) -> None:
    datasets.add(node, SAMPLES / "grid_power.parquet", name="grid", actor="t")
    with pytest.raises(UsageError, match="unknown category"):
        datasets.reclassify(node, "grid", column="户号", category="secret", actor="t")
    with pytest.raises(NotFound, match="no column"):
        datasets.reclassify(node, "grid", column="nope", category="none", actor="t")


def test_remove_deletes_file_and_logs(node: Node) -> None:
    datasets.add(node, SAMPLES / "grid_power.parquet", name="grid", actor="t")
    datasets.remove(node, "grid", actor="t")
    assert _data_files(node) == []
    assert _actions(node)[-1] == "dataset.removed"
    with pytest.raises(NotFound):
        datasets.show(node, "grid")
    ledger.verify(node)


def test_removing_a_dataset_withdraws_its_offers_and_no_others(node: Node) -> None:
    from dataspace.services import offers

    datasets.add(node, SAMPLES / "grid_power.parquet", name="grid", actor="t")
    datasets.add(node, SAMPLES / "grid_power.parquet", name="grid2", actor="t")
    made = [offers.create(node, name, actor="t", template="aggregate-only",
                          params={"purposes": "finance"})["id"]
            for name in ("grid", "grid", "grid2")]
    offers.withdraw(node, made[1], actor="t")  # already out of the catalog: left as it was
    removed = datasets.remove(node, "grid", actor="t")
    assert removed["offers_withdrawn"] == [made[0]]
    states = {o["id"]: o["state"] for o in offers.list_offers(node)}
    assert states == {made[0]: "withdrawn", made[1]: "withdrawn", made[2]: "active"}
    assert _actions(node)[-2:] == ["offer.withdrawn", "dataset.removed"]
    ledger.verify(node)


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


def test_an_import_killed_before_its_commit_leaves_nothing(node: Node) -> None:
    from dataspace.services.node import open_node

    stranded = node.data_dir / f".importing-{_dead_pid()}-{'0' * 32}.parquet"
    stranded.write_bytes((SAMPLES / "grid_power.parquet").read_bytes())
    reopened = open_node(node.root)
    assert _data_files(reopened) == []
    assert datasets.list_datasets(reopened) == []
    reopened.close()


def test_an_import_killed_after_its_commit_is_finished_on_open(node: Node) -> None:
    from dataspace.services.node import open_node

    view = datasets.add(node, SAMPLES / "grid_power.parquet", name="grid", actor="t")
    final = node.data_dir / f"{view['id']}.parquet"
    # As if the process died between the commit and moving the file into place.
    final.rename(node.data_dir / f".importing-{_dead_pid()}-{final.name}")
    reopened = open_node(node.root)
    assert _data_files(reopened) == [final.name]
    assert datasets.show(reopened, "grid")["rows"] == view["rows"]
    reopened.close()


def test_a_live_import_is_left_alone_on_open(node: Node) -> None:
    import os

    from dataspace.services.node import open_node

    live = node.data_dir / f".importing-{os.getpid()}-{'1' * 32}.parquet"
    live.write_bytes(b"in progress")
    reopened = open_node(node.root)
    assert live.exists()
    reopened.close()


def test_a_removal_killed_before_or_after_its_commit_is_finished_or_undone_on_open(
    node: Node,
) -> None:
    import os

    from dataspace.scratch import process_tag
    from dataspace.services.node import open_node

    kept = datasets.add(node, SAMPLES / "grid_power.parquet", name="grid", actor="t")
    gone = datasets.add(node, SAMPLES / "grid_power.parquet", name="grid2", actor="t")
    live = datasets.add(node, SAMPLES / "grid_power.parquet", name="grid3", actor="t")
    dead = _dead_pid()
    # killed before its commit: the file was set aside, the dataset is still registered
    kept_file = node.data_dir / f"{kept['id']}.parquet"
    kept_file.rename(node.data_dir / f".removing-{dead}.1-{kept_file.name}")
    # killed after its commit: the dataset is gone, its data must not stay behind
    gone_file = node.data_dir / f"{gone['id']}.parquet"
    parked_gone = node.data_dir / f".removing-{dead}.1-{gone_file.name}"
    gone_file.rename(parked_gone)
    with node.store.write() as session:
        from dataspace.store.models import Dataset

        session.delete(session.get(Dataset, gone["id"]))
    # an older version's name, without the process: put back all the same
    legacy = datasets.add(node, SAMPLES / "grid_power.parquet", name="grid4", actor="t")
    legacy_file = node.data_dir / f"{legacy['id']}.parquet"
    legacy_file.rename(node.data_dir / f".removing-{legacy_file.name}")
    # a removal going on in a live process: left alone
    live_file = node.data_dir / f"{live['id']}.parquet"
    parked_live = node.data_dir / f".removing-{process_tag()}-{live_file.name}"
    live_file.rename(parked_live)
    reopened = open_node(node.root)
    try:
        assert kept_file.exists() and datasets.show(reopened, "grid")["rows"] == kept["rows"]
        assert not parked_gone.exists() and not gone_file.exists()
        assert parked_live.exists()
        assert legacy_file.exists() and datasets.show(reopened, "grid4")["rows"] == legacy["rows"]
    finally:
        reopened.close()
        os.replace(parked_live, live_file)


def _resident_id(i: int) -> str:
    from dataspace.catalog.classify.id_card import check_char

    body = f"110105{1950 + i % 50}{i % 12 + 1:02d}{i % 28 + 1:02d}{i % 1000:03d}"
    return body + check_char(body)


def _profiled(view: dict[str, Any], column: str) -> dict[str, Any]:
    return next(c for c in view["profile"]["columns"] if c["name"] == column)


def test_a_personal_column_that_is_no_identifier_is_redacted_too(
    node: Node, tmp_path: Path
) -> None:
    """An address (personal, not an identifier) showed its min and max addresses."""
    homes = [f"北京市朝阳区建国路{i}号院{i % 7}单元" for i in range(40)]
    csv = tmp_path / "homes.csv"
    csv.write_text("家庭地址,性别,amount\n" + "".join(
        f"{h},{'男女'[i % 2]},{i}\n" for i, h in enumerate(homes)), encoding="utf-8")
    view = datasets.add(node, csv, name="homes", actor="t")
    assert view["classification"]["columns"]["家庭地址"]["category"] == "address_cn"
    for column in ("家庭地址", "性别"):
        shown = _profiled(view, column)
        assert shown.get("redacted") and "min" not in shown and "top_values" not in shown
    assert _profiled(view, "amount")["max"] == 39


def test_a_free_text_column_whose_extremes_are_id_numbers_is_redacted(
    node: Node, tmp_path: Path
) -> None:
    """1 % bare ID numbers among notes: no category, yet the minimum was an ID number."""
    notes = ["已放款", "待审核", "客户来电咨询", "资料齐全"]
    rows = [_resident_id(i) if i % 100 == 0 else notes[i % 4] for i in range(500)]
    csv = tmp_path / "notes.csv"
    csv.write_text("no,备注\n" + "".join(f"{i},{r}\n" for i, r in enumerate(rows)),
                   encoding="utf-8")
    view = datasets.add(node, csv, name="notes", actor="t")
    assert view["classification"]["columns"]["备注"]["category"] is None
    shown = _profiled(view, "备注")
    assert shown.get("redacted") and "min" not in shown
    assert _resident_id(0) not in json.dumps(view, ensure_ascii=False)


def test_clearing_a_category_the_values_confirmed_needs_a_reason_and_stays_redacted(
    node: Node, tmp_path: Path
) -> None:
    csv = tmp_path / "ids.csv"
    csv.write_text("证件号码,amount\n" + "".join(f"{_resident_id(i)},{i}\n" for i in range(300)),
                   encoding="utf-8")
    view = datasets.add(node, csv, name="ids", domain="finance", actor="alice")
    before = view["grading"]
    with pytest.raises(UsageError, match="confirm id_card_cn; setting it to 'none' needs a reason"):
        datasets.reclassify(node, "ids", column="证件号码", category="none", actor="alice")
    assert datasets.show(node, "ids")["classification"]["columns"]["证件号码"]["override"] is None
    after = datasets.reclassify(node, "ids", column="证件号码", category="none", actor="alice",
                                reason="synthetic numbers for a test bed")
    assert (before["level"], before["sublevel"]) == ("general", 4)
    assert (after["grading"]["level"], after["grading"]["sublevel"]) == ("general", 1)
    shown = _profiled(after, "证件号码")
    assert shown.get("redacted") and "min" not in shown
    with node.store.read() as session:
        last = log.entries(session, start=log.size(session) - 1, limit=1)[0].to_dict()
    assert last["payload"] | {"id": None} == {
        "id": None, "name": "ids", "column": "证件号码", "from": "id_card_cn", "to": "none",
        "grade": "general", "grade_from": "general-4", "grade_to": "general-1",
        "values_confirmed": ["id_card_cn"], "reason": "synthetic numbers for a test bed",
    }


def test_a_redacted_number_over_fewer_rows_than_k_shows_no_mean(
    node: Node, tmp_path: Path
) -> None:
    csv = tmp_path / "few.csv"
    csv.write_text("月收入,district\n" + "".join(f"{v},{d}\n" for v, d in
                   [(30000, "a"), ("", "b"), ("", "c")]), encoding="utf-8")
    view = datasets.add(node, csv, name="few", actor="t")
    assert view["classification"]["columns"]["月收入"]["category"] == "financial"
    shown = _profiled(view, "月收入")
    assert shown.get("redacted") and "mean" not in shown and "std" not in shown


def test_a_wide_table_registers_with_every_column_profiled(node: Node, tmp_path: Path) -> None:
    """200 columns were refused as "values too large": one profiling query over all of them
    ran out of the import's memory."""
    width = 200
    csv = tmp_path / "wide.csv"
    csv.write_text(",".join(f"c{i}" for i in range(width)) + "\n" + "".join(
        ",".join(str(r * i) for i in range(width)) + "\n" for r in range(3)), encoding="utf-8")
    view = datasets.add(node, csv, name="wide", actor="t")
    columns = view["profile"]["columns"]
    assert [c["name"] for c in columns] == [f"c{i}" for i in range(width)]
    assert (columns[-1]["min"], columns[-1]["max"], columns[-1]["distinct"]) == (0, 398, 3)


def test_a_table_wider_than_the_limit_is_refused_by_its_width(
    node: Node, tmp_path: Path
) -> None:
    csv = tmp_path / "too_wide.csv"
    csv.write_text(",".join(f"c{i}" for i in range(2001)) + "\n" + ",".join("1" * 2001) + "\n",
                   encoding="utf-8")
    with pytest.raises(UnreadableInput, match="2,001 columns; at most 2,000"):
        datasets.add(node, csv, name="too-wide", actor="t")
    assert datasets.list_datasets(node) == []


@pytest.mark.parametrize("lookalike", ["Grid", "ｇｒｉｄ", "GRID"])
def test_a_name_that_reads_like_an_existing_one_is_refused(node: Node, lookalike: str) -> None:
    datasets.add(node, SAMPLES / "grid_power.parquet", name="grid", actor="t")
    with pytest.raises(Conflict, match=f"'grid' already exists, which reads the same as "
                                       f"'{lookalike}'"):
        datasets.add(node, SAMPLES / "grid_power.parquet", name=lookalike, actor="t")
    assert [d["name"] for d in datasets.list_datasets(node)] == ["grid"]
    assert len(_data_files(node)) == 1


@pytest.mark.parametrize(("field", "text", "says"), [
    ("title", "a\x1b[31mRED\x1b[0m", "title holds the control character U+001B"),
    ("title", "two\nlines", "title holds the control character U+000A"),
    ("description", "nul\x00here", "description holds the control character U+0000"),
    ("title", "t" * 501, "title is 501 characters long; at most 500"),
])
def test_titles_and_descriptions_are_plain_text(node: Node, field: str, text: str,
                                                says: str) -> None:
    with pytest.raises(InputError, match=re.escape(says)):
        datasets.add(node, SAMPLES / "grid_power.parquet", name="grid", actor="t",
                     **{field: text})
    assert datasets.list_datasets(node) == [] and _data_files(node) == []


def test_a_description_keeps_its_lines(node: Node) -> None:
    added = datasets.add(node, SAMPLES / "grid_power.parquet", name="grid", actor="t",
                         description="第一行\n\tsecond line")
    assert datasets.show(node, added["name"])["description"] == "第一行\n\tsecond line"


def test_a_description_is_on_record_with_the_files_hash(node: Node) -> None:
    datasets.add(node, SAMPLES / "grid_power.parquet", name="grid", actor="t",
                 description='provenance {"prov:wasDerivedFrom": ["lots"]}')
    with node.store.read() as session:
        [added] = [e for e in log.entries(session, 0, 100) if e.entry["action"] == "dataset.added"]
    assert added.payload["description"] == 'provenance {"prov:wasDerivedFrom": ["lots"]}'
    assert len(added.payload["file_sha256"]) == 64
