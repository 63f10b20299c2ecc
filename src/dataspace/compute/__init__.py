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
from dataspace.compute.sandbox import QueryResult, SandboxLimits, run_query
from dataspace.compute.sqlcheck import Aggregate, CheckedQuery, SqlPolicy, check_query

__all__ = [
    "Aggregate",
    "CheckedQuery",
    "QueryFailed",
    "QueryOutOfMemory",
    "QueryRefused",
    "QueryResult",
    "QueryTimeout",
    "ResultTooLarge",
    "SandboxError",
    "SandboxLimits",
    "SqlPolicy",
    "WorkerCrashed",
    "check_query",
    "run_query",
]
