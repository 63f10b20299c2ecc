"""``/docs``: the API's operations as one HTML page, built on the node from its OpenAPI
description, with nothing fetched from elsewhere.

FastAPI's own ``/docs`` and ``/redoc`` load their scripts and fonts from public CDNs: on a
hospital's or a grid's isolated network they show a blank page. This page needs no script:
per tag, each operation's method, path, summary and roles, and a link to ``/openapi.json``
(which any OpenAPI tool reads offline).
"""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.requests import Request

__all__ = ["install_docs_page"]

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}"
    "table{border-collapse:collapse;width:100%;margin-bottom:2rem}"
    "td,th{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}"
    "code{font-size:.95em}.m{font-weight:bold;width:5rem}"
)


def install_docs_page(app: FastAPI) -> None:
    """Serve the page at ``/docs`` (and ``/redoc``, where FastAPI's other viewer was)."""

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(render(app.openapi()))

    for path in ("/docs", "/redoc"):  # plain routes, as FastAPI's own viewers are
        app.add_route(path, page, methods=["GET"], include_in_schema=False)


def render(spec: dict[str, Any]) -> str:
    info = spec.get("info", {})
    groups: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, operations in sorted(spec.get("paths", {}).items()):
        for method, op in operations.items():
            tag = (op.get("tags") or ["other"])[0]
            groups.setdefault(tag, []).append((method.upper(), path, op))
    described = {t["name"]: t.get("description", "") for t in spec.get("tags", [])}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{escape(str(info.get('title', 'API')))}</title><style>{_STYLE}</style>",
        "</head><body>",
        f"<h1>{escape(str(info.get('title', 'API')))} <small>{escape(str(info.get('version', '')))}"
        "</small></h1>",
        "<p>The machine-readable description: <a href='/openapi.json'>/openapi.json</a>. "
        "Send a token as <code>Authorization: Bearer dst_…</code>.</p>",
    ]
    for tag in sorted(groups):
        parts.append(f"<h2>{escape(tag)}</h2>")
        if described.get(tag):
            parts.append(f"<p>{escape(described[tag])}</p>")
        parts.append("<table><tr><th>method</th><th>path</th><th>what</th><th>who</th></tr>")
        for method, path, op in groups[tag]:
            roles = ", ".join(op.get("x-roles") or [])
            parts.append(
                f"<tr><td class='m'>{escape(method)}</td><td><code>{escape(path)}</code></td>"
                f"<td>{escape(str(op.get('summary', '')))}</td><td>{escape(roles)}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)
