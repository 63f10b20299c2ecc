"""Errors of governed compute (local until they move into :mod:`dataspace.errors`).

DataspaceError
├── InputError
│   ├── QueryRefused         the checker (or the locked engine) refused the SQL: policy or safety
│   └── QueryFailed          the engine could not run an accepted query; the message is opaque
└── SandboxError             the worker could not deliver a result
    ├── QueryTimeout         wall-clock limit reached; the worker was interrupted or killed
    ├── QueryOutOfMemory     the engine's memory limit (or the temp-space limit) was reached
    ├── ResultTooLarge       more result rows or bytes than the limits allow
    ├── WorkerCrashed        the worker process died without an answer
    └── SandboxBusy          every worker slot of the node is taken; nothing was run

What the engine said about a failure never reaches the consumer: it can quote a row's value
("Could not convert string 'HIV positive' ...") and whether a query fails can depend on one
row. The consumer-facing ``message``, ``hint`` and ``details`` of these errors are fixed texts;
the engine's own words are kept in ``internal_detail`` for the provider's local log only
(``to_dict()`` never includes it).
"""

from __future__ import annotations

from dataspace.errors import DataspaceError, InputError

#: What the consumer is told when the engine fails on an accepted query.
FAILED_MESSAGE = "the query failed while running; no result was released"


class _Internal:
    #: The engine's own text, for the provider's local log. Never sent to the consumer.
    internal_detail: str | None = None


class QueryRefused(_Internal, InputError):
    code = "query_refused"
    http_status = 403


class QueryFailed(_Internal, InputError):
    code = "query_failed"


class SandboxError(_Internal, DataspaceError):
    code = "sandbox_error"
    exit_code = 9
    http_status = 503


class QueryTimeout(SandboxError):
    code = "query_timeout"
    http_status = 504


class QueryOutOfMemory(SandboxError):
    code = "query_out_of_memory"
    http_status = 507


class ResultTooLarge(SandboxError):
    code = "result_too_large"
    http_status = 413


class WorkerCrashed(SandboxError):
    code = "worker_crashed"
    http_status = 500


class SandboxBusy(SandboxError):
    code = "sandbox_busy"
    http_status = 503
