"""The wire format of a job's result, and the error registry both ends decode errors with.

A result travels as the body of a ``200`` response, an Arrow IPC **stream**
(``application/vnd.apache.arrow.stream``), with the job's metadata as one line of ASCII JSON in
the ``Dataspace-Job`` header::

    HTTP/1.1 200 OK
    content-type: application/vnd.apache.arrow.stream
    dataspace-job: {"job_id": "...", "result_sha256": "...", "epsilon_spent": "0.5", ...}

    <Arrow IPC stream bytes; sha256(body) == result_sha256>

Errors never use this format: they are the node's one JSON error envelope
(``{"error": {"code", "message", "hint", "details"}}``). :func:`error_from_envelope` turns an
envelope back into the :class:`~dataspace.errors.DataspaceError` subclass its ``code`` names
(:func:`error_class`, built from the error tree; an unknown code gives ``DataspaceError``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pyarrow as pa

from dataspace.errors import DataspaceError, UsageError, VerificationError

__all__ = [
    "ARROW_MEDIA_TYPE",
    "META_HEADER",
    "decode_meta",
    "encode_meta",
    "error_class",
    "error_from_envelope",
    "from_ipc",
    "is_denial",
    "jsonable",
    "sha256_hex",
    "to_ipc",
]

ARROW_MEDIA_TYPE = "application/vnd.apache.arrow.stream"
META_HEADER = "Dataspace-Job"
JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


def to_ipc(table: pa.Table) -> bytes:
    """The table as Arrow IPC stream bytes (what crosses the wire and is hashed)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def from_ipc(payload: bytes) -> pa.Table:
    try:
        return pa.ipc.open_stream(payload).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise VerificationError(f"the result is not an Arrow IPC stream ({exc})") from None


def sha256_hex(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def jsonable(value: Any) -> Any:
    """Canonical-JSON-safe copy: floats and Decimals become decimal strings, sets lists."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def encode_meta(meta: Mapping[str, Any]) -> str:
    """One line of ASCII JSON (header-safe: non-ASCII column names are escaped)."""
    return json.dumps(jsonable(meta), ensure_ascii=True, separators=(",", ":"), sort_keys=True)


def decode_meta(text: str | None) -> dict[str, Any]:
    if not text:
        raise VerificationError(f"the result has no {META_HEADER} header")
    try:
        meta = json.loads(text)
    except ValueError:
        raise VerificationError(f"the {META_HEADER} header is not JSON") from None
    if not isinstance(meta, dict):
        raise VerificationError(f"the {META_HEADER} header is not a JSON object")
    return meta


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
        raise UsageError(
            f"job id {job_id!r} is not valid",
            hint="1-64 characters: letters, digits, '.', '_', ':', '-'; or omit it",
        )
    return job_id


# --- the error registry -----------------------------------------------------------------------


ERROR_MODULES = (
    "dataspace.compute.errors",
    "dataspace.contracts.errors",
    "dataspace.identity.digest",
    "dataspace.identity.httpsig",
    "dataspace.identity.membership",
    "dataspace.identity.replay",
    "dataspace.policy.errors",
    "dataspace.privacy.errors",
    "dataspace.services.catalog",
    "dataspace.services.mp_wire",
    "dataspace.services.negotiation",
    "dataspace.services.transfers",
)


def _load_error_modules() -> None:
    """Import every module that defines part of the error tree, so the registry sees it."""
    for name in ERROR_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


_REGISTRY: dict[str, type[DataspaceError]] | None = None


def _registry() -> dict[str, type[DataspaceError]]:
    global _REGISTRY
    if _REGISTRY is None:
        _load_error_modules()
        found: dict[str, type[DataspaceError]] = {}
        queue: list[type[DataspaceError]] = [DataspaceError]
        while queue:  # breadth first: a code shared down the tree maps to the general class
            cls = queue.pop(0)
            code = cls.__dict__.get("code")
            if isinstance(code, str) and code not in found:
                found[code] = cls
            queue.extend(cls.__subclasses__())
        _REGISTRY = found
    return _REGISTRY


def is_denial(exc: DataspaceError) -> bool:
    """Whether a job that ended with ``exc`` was denied (refused: policy, input, limits)
    rather than failed (the engine or the sandbox could not run it, the answer did not
    verify). Both ends decide with this one rule, so their ledgers say the same."""
    from dataspace.compute.errors import QueryFailed, SandboxError

    return (exc.http_status < 500
            and not isinstance(exc, SandboxError | QueryFailed | VerificationError))


def error_class(code: str) -> type[DataspaceError]:
    """The DataspaceError subclass whose ``code`` is ``code`` (DataspaceError if none)."""
    return _registry().get(code, DataspaceError)


def error_from_envelope(body: Any, status: int | None = None) -> DataspaceError:
    """Rebuild the error an API answered with ``{"error": {...}}`` (any other body: generic)."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping) or not isinstance(error.get("code"), str):
        exc = DataspaceError(
            f"unexpected answer (HTTP {status}): {str(body)[:200]}",
            hint="is the URL a dataspace node?",
        )
        if status is not None:
            exc.http_status = status
        return exc
    code = str(error["code"])
    cls = error_class(code)
    details = error.get("details")
    exc = cls.__new__(cls)
    # Subclasses may take other constructor arguments (PolicyDenied takes a Decision):
    # initialise through the root so every class rebuilds the same way.
    DataspaceError.__init__(
        exc,
        str(error.get("message") or code),
        hint=error.get("hint") if isinstance(error.get("hint"), str) else None,
        **(dict(details) if isinstance(details, Mapping) else {}),
    )
    if cls is DataspaceError or cls.code != code:
        exc.code = code
    if status is not None:
        exc.http_status = status
    return exc
