"""Datasets over HTTP: upload, show, catalog view for consumers, analysis, reclassify, remove,
and bad uploads that leave nothing behind."""

from __future__ import annotations

import os

import pytest

from dataspace.node.routers.datasets import safe_file_name
from dataspace.scratch import ALIVE_DIR, UPLOAD_PREFIX
from dataspace.services.node import Node

from .conftest import API, Api, assert_envelope, make_csv


def _scratch(node: Node) -> list[str]:
    """What the node's tmp/ holds besides the lock files of the processes using the node."""
    return sorted(name for name in os.listdir(node.tmp_dir) if name != ALIVE_DIR)


def _leftovers(api: Api) -> list[str]:
    return sorted(os.listdir(api.node.data_dir)) + _scratch(api.node)


def test_upload_registers_a_dataset_with_chinese_columns(api: Api) -> None:
    response = api.upload("客户名单", title="客户名单 2025", domain="general", description="测试")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "客户名单"
    assert body["title"] == "客户名单 2025"
    assert body["rows"] == 30
    assert body["source"]["name"] == "客户.csv"
    assert [c["name"] for c in body["profile"]["columns"]][:2] == ["客户编号", "姓名"]
    assert _scratch(api.node) == []

    listed = api.client.get(f"{API}/datasets", headers=api.as_("consumer")).json()
    assert [d["name"] for d in listed] == ["客户名单"]

    shown = api.client.get(f"{API}/datasets/客户名单", headers=api.as_("provider")).json()
    assert shown["rows"] == 30 and "classification" in shown and "profile" in shown


def test_name_defaults_to_the_file_stem(api: Api) -> None:
    response = api.upload(filename="供应商.csv")
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "供应商"


def test_consumer_sees_only_the_catalog_view(api: Api) -> None:
    api.new_dataset()
    view = api.client.get(f"{API}/datasets/客户-0", headers=api.as_("consumer")).json()
    assert set(view) == {
        "name",
        "title",
        "domain",
        "description",
        "rows",
        "columns",
        "grade",
        "grade_label",
        "quality",
    }
    assert [c["name"] for c in view["columns"]] == HEADER_COLUMNS
    assert all(set(c) == {"name", "type"} and c["type"] for c in view["columns"])
    assert view["rows"] == 30
    assert "13812345670" not in str(view)


HEADER_COLUMNS = ["客户编号", "姓名", "手机号", "城市", "年龄", "月收入"]


@pytest.mark.parametrize("part", ["profile", "classification", "quality"])
def test_analysis_parts(api: Api, part: str) -> None:
    name = api.new_dataset()
    response = api.client.get(f"{API}/datasets/{name}/{part}", headers=api.as_("auditor"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == name
    assert body[part]


def test_classification_names_every_column(api: Api) -> None:
    name = api.new_dataset()
    body = api.client.get(f"{API}/datasets/{name}/classification", headers=api.as_("admin")).json()
    assert sorted(body["classification"]["columns"]) == sorted(HEADER_COLUMNS)
    assert body["grading"]


def test_reclassify_sets_and_clears_a_category(api: Api) -> None:
    name = api.new_dataset()
    url = f"{API}/datasets/{name}/reclassify"
    response = api.client.post(
        url, headers=api.as_("provider"), json={"column": "城市", "category": "none"}
    )
    assert response.status_code == 200, response.text
    column = response.json()["classification"]["columns"]["城市"]
    assert column["override"] == "none" and column["category"] is None
    entries = api.client.get(f"{API}/ledger/entries", headers=api.as_("auditor")).json()["entries"]
    assert "dataset.reclassified" in str(entries[-1])


def test_reclassify_rejects_unknown_category_and_column(api: Api) -> None:
    name = api.new_dataset()
    url = f"{API}/datasets/{name}/reclassify"
    headers = api.as_("provider")
    assert_envelope(
        api.client.post(url, headers=headers, json={"column": "城市", "category": "x"}),
        400,
        "usage",
    )
    assert_envelope(
        api.client.post(url, headers=headers, json={"column": "无此列", "category": "none"}),
        404,
        "not_found",
    )
    error = assert_envelope(
        api.client.post(url, headers=headers, json={"column": "城市"}), 422, "invalid_request"
    )
    assert error["details"]["errors"][0]["field"] == "body.category"


def test_delete_removes_the_dataset_and_its_file(api: Api) -> None:
    name = api.new_dataset()
    assert len(os.listdir(api.node.data_dir)) == 1
    response = api.client.delete(f"{API}/datasets/{name}", headers=api.as_("provider"))
    assert response.status_code == 200, response.text
    assert response.json()["name"] == name
    assert_envelope(
        api.client.get(f"{API}/datasets/{name}", headers=api.as_("admin")), 404, "not_found"
    )
    assert _leftovers(api) == []


def test_duplicate_name_is_a_conflict(api: Api) -> None:
    api.upload("同名")
    assert_envelope(api.upload("同名"), 409, "conflict")
    assert len(os.listdir(api.node.data_dir)) == 1
    assert _scratch(api.node) == []


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        (b"", "empty.csv"),
        (bytes(range(256)) * 64, "binary.csv"),
        (b"\x00\x01PK\x03\x04" + os.urandom(4096), "archive.bin"),
        (b"PAR1" + bytes(36), "trunc.parquet"),  # the engine's message quotes its path
    ],
    ids=["empty", "binary", "random", "truncated-parquet"],
)
def test_bad_upload_is_422_and_leaves_nothing_behind(api: Api, data: bytes, filename: str) -> None:
    response = api.upload("bad", data=data, filename=filename)
    assert response.status_code == 422, response.text
    error = assert_envelope(response, 422, response.json()["error"]["code"])
    assert error["code"] in {"unreadable_input", "invalid_input"}
    assert error["hint"]
    if "file" in error.get("details", {}):  # the caller's file name, not the node's temp path
        assert error["details"]["file"] == filename
    assert str(api.node.root) not in response.text
    assert _leftovers(api) == []
    # The server keeps serving.
    assert api.client.get(f"{API}/health").status_code == 200
    assert api.upload("good").status_code == 201
    assert (
        api.client.get(f"{API}/datasets", headers=api.as_("consumer")).json()[0]["name"] == "good"
    )


@pytest.mark.parametrize(
    ("name", "code"),
    [("../etc", "invalid_name"), (" 空格", "invalid_name"), (".hidden", "invalid_name")],
)
def test_bad_names_are_rejected(api: Api, name: str, code: str) -> None:
    assert_envelope(api.upload(name), 422, code)
    assert _leftovers(api) == []


def test_upload_needs_multipart(api: Api) -> None:
    response = api.client.post(f"{API}/datasets", headers=api.as_("provider"), json={"name": "x"})
    assert_envelope(response, 415, "unsupported_media_type")


def test_upload_needs_a_file(api: Api) -> None:
    response = api.client.post(
        f"{API}/datasets",
        headers=api.as_("provider"),
        data={"name": "x"},
        files={"title": (None, "t")},
    )
    error = assert_envelope(response, 422, "invalid_input")
    assert error["details"] == {"field": "file"}
    assert _leftovers(api) == []


def test_upload_rejects_unknown_fields(api: Api) -> None:
    response = api.upload("x", colour="red")
    error = assert_envelope(response, 422, "invalid_input")
    assert error["details"] == {"field": "colour"}
    assert _leftovers(api) == []


def test_truncated_multipart_body_is_rejected(api: Api) -> None:
    head = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
    body = head + make_csv()
    response = api.client.post(
        f"{API}/datasets",
        headers={**api.as_("provider"), "Content-Type": "multipart/form-data; boundary=XyZ"},
        content=body,
    )
    assert_envelope(response, 422, "invalid_input")
    assert _leftovers(api) == []


def test_uploaded_file_name_cannot_escape_the_scratch_folder(api: Api) -> None:
    response = api.upload("escape", filename="../../data/evil.csv")
    assert response.status_code == 201, response.text
    assert response.json()["source"]["name"] == "evil.csv"
    assert [p for p in os.listdir(api.node.data_dir) if "evil" in p] == []
    assert _scratch(api.node) == []


def test_upload_takes_one_file(api: Api) -> None:
    response = api.client.post(
        f"{API}/datasets",
        headers=api.as_("provider"),
        files=[
            ("file", ("a.csv", make_csv(), "text/csv")),
            ("file", ("b.csv", make_csv(), "text/csv")),
        ],
    )
    assert_envelope(response, 422, "invalid_input")
    assert _leftovers(api) == []


def test_a_larger_upload_streams_to_disk_and_is_cleaned_up(api: Api) -> None:
    data = make_csv(15_000)
    assert len(data) > 500_000  # many receive chunks
    response = api.upload("大文件", data=data)
    assert response.status_code == 201, response.text
    assert response.json()["rows"] == 15_000
    assert _scratch(api.node) == []


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("客户.csv", "客户.csv"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\data.csv", "data.csv"),
        ("..", "upload"),
        ("", "upload"),
        (".env", "env"),
        ("a\x00b\n.csv", "ab.csv"),
    ],
)
def test_safe_file_name(raw: str, safe: str) -> None:
    assert safe_file_name(raw) == safe


def test_an_upload_over_the_limit_is_refused_and_leaves_nothing(make_node, tmp_path) -> None:
    import tomllib

    import tomli_w
    from fastapi.testclient import TestClient

    from dataspace.node.app import create_app
    from dataspace.services.node import open_node

    node, secret = make_node("bank-a")
    config = tomllib.loads((node.root / "node.toml").read_text())
    config["limits"] = {"api_max_upload_mb": 1}
    (node.root / "node.toml").write_text(tomli_w.dumps(config))
    small = open_node(node.root)
    client = TestClient(create_app(small))
    body = b"a,b\n" + b"1,2\n" * 300_000  # 1.2 MB
    response = client.post(
        "/api/v1/datasets",
        headers={"Authorization": f"Bearer {secret}"},
        files={"file": ("big.csv", body, "text/csv")},
        data={"name": "big"},
    )
    assert response.status_code == 422
    assert "larger than 1,048,576 bytes" in response.json()["error"]["message"]
    assert list(small.data_dir.iterdir()) == [] and _scratch(small) == []
    assert client.get("/api/v1/health").status_code == 200
    small.close()


def test_a_blank_name_field_means_absent_as_for_the_other_fields(api: Api) -> None:
    """HTML forms and `curl -F name=` send empty fields: the file's name is taken."""
    response = api.upload(" ", filename="客户.csv")
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "客户"
    assert list(api.node.tmp_dir.glob(f"{UPLOAD_PREFIX}*")) == []
