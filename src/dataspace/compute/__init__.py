"""Governed compute: SQL checked against the agreement, run in a locked-down DuckDB worker."""

from dataspace.compute.errors import (
    QueryFailed,
    QueryOutOfMemory,
    QueryRefused,
    QueryTimeout,
    ResultTooLarge,
    SandboxError,
    WorkerCrashed,
)
from dataspace.compute.sandbox import (
    QueryResult,
    RunningQuery,
    SandboxLimits,
    run_query,
    start_query,
)
from dataspace.compute.sqlcheck import Aggregate, CheckedQuery, SqlPolicy, check_query, check_text

__all__ = [
    "Aggregate",
    "CheckedQuery",
    "QueryFailed",
    "QueryOutOfMemory",
    "QueryRefused",
    "QueryResult",
    "QueryTimeout",
    "ResultTooLarge",
    "RunningQuery",
    "SandboxError",
    "SandboxLimits",
    "SqlPolicy",
    "WorkerCrashed",
    "check_query",
    "check_text",
    "run_query",
    "start_query",
]
