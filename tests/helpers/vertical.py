"""Data for vertical (feature-split) federated tests: one CSV per party keyed by credit code."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dataspace.policy import Policy, from_template
from helpers.agreements import pseudonymized


def write_party_csv(
    path: Path, codes: list[str], cols: list[str], x: np.ndarray, labels: np.ndarray | None = None
) -> Path:
    """``credit_code``, the party's columns (6 decimals) and, for the label party, ``defaulted``."""
    head = ["credit_code", *cols] + (["defaulted"] if labels is not None else [])
    lines = [",".join(head)]
    for i, code in enumerate(codes):
        row = [code, *(f"{v:.6f}" for v in x[i])]
        if labels is not None:
            row.append(str(int(labels[i])))
        lines.append(",".join(row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def vertical_offers() -> dict[str, Policy]:
    """What each provider of a vertical job offers the label party: ``psi`` (align on
    ``credit_code``), ``train`` (vlr: aggregate-only) and ``gbdt`` (vgbdt: pseudonymized)."""
    train = from_template("federated-train", purposes=["finance"])
    return {
        "psi": from_template("psi-only", purposes=["finance"], fields=["credit_code"],
                         output="pseudonymized"),
        "train": train,
        "gbdt": pseudonymized(train),
    }
