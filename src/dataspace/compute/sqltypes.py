"""What a governed query may do (:class:`SqlPolicy`) and what the checker returns."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from dataspace.errors import UsageError

Output = Literal["aggregate-only", "pseudonymized", "raw"]
OUTPUTS: tuple[str, ...] = ("aggregate-only", "pseudonymized", "raw")


def _lower(names: Iterable[str]) -> set[str]:
    return {n.lower() for n in names}


@dataclass(frozen=True)
class SqlPolicy:
    """What an agreement lets a governed query do with one dataset."""

    table: str
    columns: Mapping[str, str]
    allowed_fields: frozenset[str] | None = None
    prohibited_fields: frozenset[str] = frozenset()
    sensitive_columns: frozenset[str] = frozenset()
    identifier_columns: frozenset[str] = frozenset()
    min_group_size: int = 1
    output: Output = "aggregate-only"
    contributor_column: str | None = None

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise UsageError(
                f"unknown output mode {self.output!r}", hint="use " + " | ".join(OUTPUTS)
            )
        if not isinstance(self.min_group_size, int) or self.min_group_size < 1:
            raise UsageError(
                f"min_group_size must be a positive integer, got {self.min_group_size!r}"
            )
        if not self.columns:
            raise UsageError(f"table '{self.table}' has no columns")
        for name in (
            "allowed_fields",
            "prohibited_fields",
            "sensitive_columns",
            "identifier_columns",
        ):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, frozenset(_lower(value)))
        if self.contributor_column is not None and self.contributor_column.lower() not in {
            c.lower() for c in self.columns
        }:
            raise UsageError(f"contributor column '{self.contributor_column}' is not a column")


@dataclass(frozen=True)
class Aggregate:
    """One aggregate of a checked query, for the DP layer to derive its sensitivity."""

    function: str  # canonical name: count, count_if, sum, avg, stddev, min, quantile_cont, ...
    column: str | None  # the argument when it is a bare column (None for COUNT(*) or expressions)
    columns: tuple[str, ...]  # every column the argument reads
    distinct: bool
    filtered: bool  # has a FILTER (WHERE ...) clause
    clause: str  # select | having | order
    output: str | None  # the output column when the SELECT item is exactly this aggregate
    sql: str


@dataclass(frozen=True)
class CheckedQuery:
    """A query that passed the checker, with the SQL that will actually run."""

    sql: str
    original: str
    table: str
    output: Output
    output_columns: tuple[str, ...]
    group_keys: tuple[str, ...]
    aggregates: tuple[Aggregate, ...]
    is_aggregate: bool
    min_group_size: int
    columns_read: tuple[str, ...] = field(default=())
