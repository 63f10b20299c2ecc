"""The one JSON error envelope of the HTTP API.

Every error the API returns — a :class:`~dataspace.errors.DataspaceError` from a service, a
request that fails validation, an unknown route, a wrong method, a bug — has this shape::

    {"error": {"code": "not_found", "message": "...", "hint": "...", "details": {...}}}

``code`` is stable and machine-readable; ``message`` says what happened; ``hint`` (optional)
says what to do; ``details`` (optional) carries structured context such as the invalid fields.
An unexpected exception is logged with its traceback and answered with a generic 500 that
names only an incident id to look the log line up by.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from dataspace.errors import AuthError, DataspaceError
from dataspace.node.head_requests import sent_method

log = logging.getLogger("dataspace.node")

#: codes for HTTP errors raised by the framework itself (routing, methods, media types)
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ErrorBody(BaseModel):
    code: str = Field(description="stable, machine-readable error code", examples=["not_found"])
    message: str = Field(description="what happened")
    hint: str | None = Field(default=None, description="what to do about it")
    details: dict[str, Any] | None = Field(default=None, description="structured context")


class ErrorEnvelope(BaseModel):
    """The shape of every error response."""

    error: ErrorBody


def _doc(description: str) -> dict[str, Any]:
    return {"model": ErrorEnvelope, "description": description}


#: OpenAPI responses every route may give
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _doc("A bad argument: the message says which (docs/api.md lists every code)"),
    422: _doc("The request is invalid (the offending field is named in details.errors)"),
    500: _doc("Unexpected server error (logged; the response names an incident id)"),
    503: _doc("The node's state database failed or is unreachable"),
}
#: OpenAPI responses of routes that name an object in their path (``/jobs/{job_id}``)
NAMED_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: _doc("No such object on this node"),
}
#: OpenAPI responses of routes that change something
CHANGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: _doc("The current state forbids it: a name taken, an id reused, a state moved on"),
    413: _doc("The request body is over the node's limit"),
}
#: OpenAPI responses of routes that need a bearer token
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _doc("Missing, unknown or revoked bearer token"),
    403: _doc("The token's role may not call this endpoint"),
}


MAX_MESSAGE_CHARS = 2000  # a message quotes the input: a 100,000-character name is not echoed


def _short(text: str | None) -> str:
    text = text or ""
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return text[:MAX_MESSAGE_CHARS] + f"… ({len(text) - MAX_MESSAGE_CHARS:,} more characters)"


def envelope(
    code: str, message: str, *, hint: str | None = None, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": _short(message)}
    if hint:
        body["hint"] = _short(hint)
    if details:
        body["details"] = details
    return {"error": body}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    hint: str | None = None,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        envelope(code, message, hint=hint, details=details), status_code=status, headers=headers
    )


def _jsonable(value: Any) -> Any:
    """Details must always serialise; anything exotic becomes its string form, and text no
    encoder takes (a lone surrogate quoted from a request) its escaped form."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if value is None or isinstance(value, int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)


_CLI_FLAG = re.compile(r"--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")


def _body_fields(request: Request) -> frozenset[str]:
    """The JSON body fields of the route that answered, if it takes a body model."""
    body = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(body, "field_info", None), "annotation", None)
    return frozenset(getattr(model, "model_fields", None) or ())


def _in_api_terms(text: str | None, fields: frozenset[str]) -> str | None:
    """The services speak the CLI's words (``--dp-epsilon-per-query``); over HTTP a flag
    that is a field of this route's body is named as that field (``dp_epsilon_per_query``)."""
    if not text or not fields:
        return text

    def field(match: re.Match[str]) -> str:
        name = match.group(1).replace("-", "_")
        return name if name in fields else match.group(0)

    return _CLI_FLAG.sub(field, text)


async def _dataspace_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DataspaceError)
    headers = None
    if isinstance(exc, AuthError) and exc.http_status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    if exc.http_status >= 500:
        log.warning("%s %s failed: %s", request.method, request.url.path, exc)
    body = _jsonable(exc.to_dict())
    fields = _body_fields(request)
    body["message"] = _short(_in_api_terms(body["message"], fields))
    if body.get("hint"):
        body["hint"] = _short(_in_api_terms(body["hint"], fields))
    return JSONResponse({"error": body}, status_code=exc.http_status, headers=headers)


def _field(loc: tuple[int | str, ...] | list[int | str]) -> str:
    return ".".join(str(part) for part in loc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"field": _field(e.get("loc", ())), "message": str(e.get("msg", "")), "type": e.get("type")}
        for e in exc.errors()
    ]
    if errors:
        first = errors[0]
        message = f"invalid {first['field']}: {first['message']}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
    else:
        message = "invalid request"
    return error_response(
        422,
        "invalid_request",
        message,
        hint="fix the named fields; the schema is at /openapi.json",
        details={"errors": errors},
    )


def _methods_of(request: Request) -> list[str]:
    """The methods the app's routes take on the request's path."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in getattr(request.app, "routes", []):
        match, _ = route.matches({**request.scope, "method": "GET"})
        route_methods = getattr(route, "methods", None)
        if match != Match.NONE and route_methods:
            methods |= set(route_methods)
    if "GET" in methods:  # HeadAsGet answers HEAD wherever GET is taken
        methods.add("HEAD")
    return sorted(methods)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = HTTP_CODES.get(status, "http_error")
    headers = dict(exc.headers) if exc.headers else None
    hint = None
    details = None
    if status == 404 and exc.detail == "Not Found":
        message = f"no route {sent_method(request.scope)} {request.url.path}"
        hint = "the API lives under /api/v1; its routes are listed at /openapi.json"
    elif status == 405:
        message = f"method {sent_method(request.scope)} is not allowed on {request.url.path}"
        methods = _methods_of(request)
        if methods:  # every route of the path, not only the first one the router met
            headers = {**(headers or {}), "allow": ", ".join(methods)}
            headers.pop("Allow", None)
        allowed = (headers or {}).get("allow") or (headers or {}).get("Allow")
        if allowed:
            details = {"allowed": [m.strip() for m in allowed.split(",")]}
            hint = f"use {allowed}"
    else:
        message = str(exc.detail)
    return error_response(status, code, message, hint=hint, details=details, headers=headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    incident = secrets.token_hex(6)
    log.error(
        "incident %s: unexpected error in %s %s",
        incident,
        request.method,
        request.url.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return error_response(
        500,
        "internal_error",
        "internal server error",
        hint=f"this is a bug; the node's log has the details under incident {incident}",
        details={"incident": incident},
    )


def install_error_handlers(app: FastAPI) -> None:
    """Route every kind of error through the one envelope."""
    app.add_exception_handler(DataspaceError, _dataspace_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
