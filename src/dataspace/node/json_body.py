"""JSON request bodies, checked before anything reads them.

FastAPI would accept a lone surrogate escape (``"\\ud800"``) in any string field without a
length or pattern constraint; no store, log or response can hold it, so it failed later, as a
500, and a job row holding one broke every listing of jobs. It also answers too-deep nesting or
an over-long integer with "There was an error parsing the body". :class:`CheckedJsonRoute`
parses a route's JSON body first and refuses such a body with what is wrong; the DSP and peer
routes, which read their bodies themselves, use :func:`~dataspace.jsondoc.parse_json` too.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response, params
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from dataspace.errors import DataspaceError, InputError
from dataspace.jsondoc import NotJson, parse_json
from dataspace.node.auth import authenticated_token, bearer_secret


class InvalidBody(InputError):
    code = "invalid_request"  # as for a body that fails the route's model


class UnsupportedMediaType(DataspaceError):
    code = "unsupported_media_type"
    exit_code = 3
    http_status = 415


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

        roles = (self.openapi_extra or {}).get("x-roles") or []
        needs_token = any(role not in ("public", "peer") for role in roles)

        async def checked(request: Request) -> Response:
            if needs_token:  # the 401 a caller without a valid token gets anyway, before its
                # body is read and parsed (the route's dependency then checks the role)
                await run_in_threadpool(authenticated_token, request, request.app.state.node,
                                        bearer_secret(request))
            try:
                raw = await request.body()  # kept on the request: FastAPI reads it from there
            except ClientDisconnect:
                raise InvalidBody("the client closed the connection before the whole body "
                                  "arrived", hint="send the request again") from None
            content_type = request.headers.get("content-type")
            if raw and content_type is not None and not _is_json(content_type):
                raise UnsupportedMediaType(
                    f"the body is {content_type.split(';', 1)[0]}, not JSON",
                    hint="send the body as JSON with Content-Type: application/json",
                )
            if raw:
                try:  # off the event loop: a 16 MiB body takes a while to walk
                    doc = await run_in_threadpool(parse_json, raw)
                except NotJson as exc:
                    raise InvalidBody(f"the body {exc}", hint="send one JSON object; the "
                                      "schema is at /openapi.json") from None
                # Starlette's Request.json() caches here: FastAPI takes this document rather
                # than parsing the body a second time (were the name to change, it would only
                # parse twice again)
                request._json = doc
            return await handler(request)

        return checked
