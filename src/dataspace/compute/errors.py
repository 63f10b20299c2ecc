"""Errors of governed compute (local until they move into :mod:`dataspace.errors`).

DataspaceError
├── InputError
│   ├── QueryRefused         the checker (or the locked engine) refused the SQL: policy or safety
│   └── QueryFailed          the engine could not run an accepted query (type error, bad cast)
└── SandboxError             the worker could not deliver a result
    ├── QueryTimeout         wall-clock limit reached; the worker was interrupted or killed
    ├── QueryOutOfMemory     the engine's memory limit (or the temp-space limit) was reached
    ├── ResultTooLarge       more result rows or bytes than the limits allow
    └── WorkerCrashed        the worker process died without an answer
"""

from __future__ import annotations

from dataspace.errors import DataspaceError, InputError


class QueryRefused(InputError):
    code = "query_refused"
    http_status = 403


class QueryFailed(InputError):
    code = "query_failed"


class SandboxError(DataspaceError):
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
