"""docs/api.md stays true: its roles table matches the app, and OpenAPI documents every route."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.routing import APIRoute

from dataspace.node.app import route_roles

from .conftest import ROLES, Api

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
COLUMNS = ("public", *ROLES)


def _documented_roles() -> dict[str, tuple[str, ...]]:
    text = DOC.read_text(encoding="utf-8")
    table = text.split("<!-- roles -->", 1)[1].strip().split("\n\n", 1)[0]
    documented = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        endpoint = cells[0].strip("`")
        marks = dict(zip(COLUMNS, cells[1:], strict=True))
        if marks["public"]:
            documented[endpoint] = ("public",)
        else:
            documented[endpoint] = tuple(r for r in ROLES if marks[r])
    return documented


def test_roles_table_matches_the_app(api: Api) -> None:
    actual = {}
    for route in api.app.routes:
        # Node-to-node routes are documented in docs/peers.md and docs/dsp.md.
        if isinstance(route, APIRoute) and route_roles(route) != ("peer",):
            for method in route.methods:
                actual[f"{method} {route.path}"] = route_roles(route) or ("public",)
    assert _documented_roles() == actual


def test_every_operation_has_a_summary_and_the_error_envelope(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            where = f"{method.upper()} {path}"
            assert op.get("summary"), where
            assert re.match(r"(Roles: |Public|Peers only)", op["description"]), where
            for status in ("422", "500", *(("401", "403") if op["x-roles"] != ["public"] else ())):
                ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorEnvelope"), (where, status)
    upload = spec["paths"]["/api/v1/datasets"]["post"]["requestBody"]["content"]
    assert "file" in upload["multipart/form-data"]["schema"]["properties"]


def test_every_error_code_is_in_the_error_table_with_its_status() -> None:
    """The table listed a third of the codes the API returns (an integrator met
    `illegal_transition`, `query_failed`, `delivery_failed`... undocumented)."""
    import importlib
    import pkgutil

    import dataspace
    from dataspace.errors import DataspaceError

    for module in pkgutil.walk_packages(dataspace.__path__, "dataspace."):
        if not module.name.endswith(("__main__", ".demo")):
            importlib.import_module(module.name)

    def every(cls: type[DataspaceError]) -> list[type[DataspaceError]]:
        return [cls] + [c for sub in cls.__subclasses__() for c in every(sub)]

    text = DOC.read_text(encoding="utf-8")
    table = text.split("| status | code | when |", 1)[1].split("\n\n", 1)[0]
    documented = {(int(status), code)
                  for status, codes in re.findall(r"^\| (\d{3}) \| ([^|]+) \|", table, re.M)
                  for code in re.findall(r"`([a-z_]+)`", codes)}
    missing = sorted({(c.http_status, c.code) for c in every(DataspaceError)} - documented)
    assert missing == []


def test_the_docs_page_needs_nothing_from_outside(api: Api) -> None:
    """FastAPI's /docs and /redoc load scripts and fonts from public CDNs: blank on a
    hospital's closed network. The page is built on the node, and lists every operation."""
    page = api.client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text and "<script" not in page.text
    assert "/api/v1/datasets" in page.text and "/openapi.json" in page.text
    assert api.client.get("/redoc").text == page.text
    spec = api.client.get("/openapi.json").json()
    assert "/docs" not in spec["paths"]


def test_openapi_declares_the_errors_an_operation_can_answer(api: Api) -> None:
    """Only 200/201/202/401/403/422/500 were declared: a generated client knew nothing of
    the 404s, 409s, 400s and 503s the API answers."""
    paths = api.client.get("/openapi.json").json()["paths"]
    shown = paths["/api/v1/jobs/{job_id}"]["get"]["responses"]
    assert {"400", "401", "403", "404", "422", "500", "503"} <= set(shown)
    issued = paths["/api/v1/bills"]["post"]["responses"]
    assert {"409", "413"} <= set(issued) and "404" not in issued
