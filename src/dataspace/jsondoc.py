"""JSON documents from outside (request bodies, files named on the command line), parsed and
checked before anything walks them: nesting no deeper than :data:`MAX_JSON_DEPTH` (the
validators recurse) and only Unicode text (a lone surrogate escape such as ``"\\ud800"`` is
valid JSON, but no store, log or response can hold it). :func:`iso_utc` writes a stored time
into a JSON view, with its offset.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

MAX_JSON_DEPTH = 48  # DSP messages nest about 12 deep; a policy's logical constraints a few more


class NotJson(ValueError):
    """The bytes are not a JSON document this node accepts. The message says why, as a
    predicate to put after what the bytes are ("the body", a file's name)."""


def parse_json(raw: bytes) -> Any:
    """The document ``raw`` holds, or :class:`NotJson` saying why it is not usable: not JSON
    (with line and column), not UTF-8, nested deeper than :data:`MAX_JSON_DEPTH` (the
    validators recurse), an integer longer than Python converts, a lone surrogate."""
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise NotJson(f"is not JSON: {exc.msg} at line {exc.lineno} column "
                      f"{exc.colno}") from None
    except UnicodeDecodeError:
        raise NotJson("is not UTF-8 JSON") from None
    except RecursionError:
        raise NotJson(f"nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # e.g. an integer longer than Python converts
        raise NotJson(f"is not usable JSON: {exc}") from None
    check_shape(doc)
    return doc


def check_shape(doc: Any) -> None:
    """Refuse JSON nested deeper than :data:`MAX_JSON_DEPTH` or holding a lone surrogate."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise NotJson(f"nests deeper than {MAX_JSON_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    stack.append((key, depth))
                stack.append((item, depth + 1))
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise NotJson("holds a lone surrogate (\\ud800-\\udfff): not Unicode "
                              "text") from None


def utc(moment: datetime) -> datetime:
    """A stored time with its offset: SQLite hands back naive UTC times."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso_utc(moment: datetime | None) -> str | None:
    """A stored time as ISO 8601 with its offset (printed bare, ``2026-12-02T16:52:36``
    read as local time)."""
    return None if moment is None else utc(moment).isoformat()
