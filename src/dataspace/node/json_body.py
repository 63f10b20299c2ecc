"""JSON request bodies, checked before anything reads them.

FastAPI would accept a lone surrogate escape (``"\\ud800"``) in any string field without a
length or pattern constraint; no store, log or response can hold it, so it failed later, as a
500, and a job row holding one broke every listing of jobs. It also answers too-deep nesting or
an over-long integer with "There was an error parsing the body". :class:`CheckedJsonRoute`
parses a route's JSON body first and refuses such a body with what is wrong; the DSP and peer
routes, which read their bodies themselves, use :func:`parse_json` too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response, params
from fastapi.routing import APIRoute

from dataspace.errors import DataspaceError, InputError

MAX_JSON_DEPTH = 48  # DSP messages nest about 12 deep; a policy's logical constraints a few more


class NotJson(ValueError):
    """The bytes are not a JSON document this node accepts; the message says why."""


class InvalidBody(InputError):
    code = "invalid_request"  # as for a body that fails the route's model


class UnsupportedMediaType(DataspaceError):
    code = "unsupported_media_type"
    exit_code = 3
    http_status = 415


def parse_json(raw: bytes) -> Any:
    """The document ``raw`` holds, or :class:`NotJson` saying why it is not usable: not JSON
    (with line and column), not UTF-8, nested deeper than :data:`MAX_JSON_DEPTH` (the
    validators recurse), an integer longer than Python converts, a lone surrogate."""
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise NotJson(f"the body is not JSON: {exc.msg} at line {exc.lineno} column "
                      f"{exc.colno}") from None
    except UnicodeDecodeError:
        raise NotJson("the body is not UTF-8 JSON") from None
    except RecursionError:
        raise NotJson(f"the body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # e.g. an integer longer than Python converts
        raise NotJson(f"the body is not usable JSON: {exc}") from None
    check_shape(doc)
    return doc


def check_shape(doc: Any) -> None:
    """Refuse JSON nested deeper than :data:`MAX_JSON_DEPTH` or holding a lone surrogate."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise NotJson(f"the body nests deeper than {MAX_JSON_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    stack.append((key, depth))
                stack.append((item, depth + 1))
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise NotJson("the body holds a lone surrogate (\\ud800-\\udfff): not Unicode "
                              "text") from None


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/")
                                          and kind.endswith("+json"))


class CheckedJsonRoute(APIRoute):
    """An API route whose JSON body is parsed and checked (:func:`parse_json`) before FastAPI
    validates it against the route's model."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None or isinstance(self.body_field.field_info, params.Form):
            return handler  # no body, or a form (an upload streams its body to disk)

        async def checked(request: Request) -> Response:
            raw = await request.body()  # kept on the request: FastAPI reads it from there
            content_type = request.headers.get("content-type")
            if raw and content_type is not None and not _is_json(content_type):
                raise UnsupportedMediaType(
                    f"the body is {content_type.split(';', 1)[0]}, not JSON",
                    hint="send the body as JSON with Content-Type: application/json",
                )
            if raw:
                try:
                    parse_json(raw)
                except NotJson as exc:
                    raise InvalidBody(str(exc), hint="send one JSON object; the schema is at "
                                      "/openapi.json") from None
            return await handler(request)

        return checked
