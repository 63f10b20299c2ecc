"""The columns a training or a prediction reads: each named once, present, and numeric.

Errors name the column and never one of its values: a provider's error travels to the
initiator, and a cell of its data must not travel with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from dataspace.catalog.profile import kind_of
from dataspace.errors import UsageError

__all__ = ["check_named", "check_parties", "numeric_block", "numeric_column"]


def check_parties(features: Mapping[str, Sequence[str]], parties: Sequence[str]) -> None:
    """Every party ``--features`` names takes part in the job: columns of a node left out
    would otherwise be dropped without a word."""
    strangers = [p for p in features if p not in parties]
    if strangers:
        raise UsageError(
            f"--features names {', '.join(strangers)}: not a party of this job "
            f"({', '.join(parties)})",
            hint="name only this node and the peers given with --with (or the agreements)",
        )


def check_named(party: str, columns: Sequence[str], available: Mapping[str, str] | None = None,
                *, label: str | None = None) -> None:
    """``columns`` of ``party``: none twice, not the label, and (``available``, this node's
    own dataset) each one it has."""
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            raise UsageError(f"--features names {party}:{column} twice")
        seen.add(column)
    if label is not None and label in seen:
        raise UsageError(f"the label {label} cannot also be a feature of {party}",
                         hint="a model that reads its label as a feature learns nothing")
    if available is None:
        return
    missing = [c for c in [*columns, *([label] if label else [])] if c not in available]
    if missing:
        raise UsageError(f"the dataset of {party} has no column {', '.join(missing)}",
                         hint="columns: " + ", ".join(available))
    for column in [*columns, *([label] if label else [])]:
        if kind_of(available[column]) not in ("number", "boolean"):
            raise UsageError(f"column {column} of {party} holds {available[column]}, not numbers",
                             hint="training reads numbers: encode it at home, or leave it out")


def numeric_block(table: pa.Table, names: Sequence[str]) -> np.ndarray:
    """The columns ``names`` of ``table`` as one float64 matrix, a row per table row."""
    return np.column_stack([numeric_column(table, name) for name in names])


def numeric_column(table: pa.Table, name: str) -> np.ndarray:
    """One column as float64 (numbers, booleans, or text holding only numbers)."""
    try:
        return np.asarray(table.column(name).to_numpy(), dtype=np.float64)
    except (TypeError, ValueError):
        raise UsageError(f"column {name} is not numeric: training and prediction read numbers",
                         hint="encode it as numbers at home, or leave it out") from None
