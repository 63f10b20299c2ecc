"""Registering datasets: import, profile, classify, grade, assess quality, log — atomically.

The Parquet file is written under a temporary name and only becomes the dataset's file after
the catalog row and its ledger entry have committed; any failure before that removes it, so
nothing half-imported stays in the data folder, the catalog or the ledger.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.catalog import ingest, profile, quality
from dataspace.catalog.classify import (
    CATEGORIES,
    DETECTORS,
    Finding,
    classify_column,
    is_identifier,
    is_personal,
    override_finding,
)
from dataspace.catalog.grading import DOMAINS, ColumnFindings, grade_dataset, load_rules
from dataspace.catalog.sample import sample_columns
from dataspace.errors import Conflict, InputError, NotFound, UsageError
from dataspace.jsondoc import iso_utc
from dataspace.ledger import log
from dataspace.scratch import REMOVING_PREFIX, is_stale, process_tag
from dataspace.services.names import check_dataset_name, lookalike_key
from dataspace.services.node import Node
from dataspace.store.models import MAX_TITLE, Dataset

NO_CATEGORY = "none"


def _get(session: Session, name: str) -> Dataset:
    row = session.scalars(select(Dataset).where(Dataset.name == name)).first()
    if row is None:
        raise NotFound(f"no dataset named {name!r}", hint="see `dataspace dataset list`")
    return row


def _check_domain(domain: str) -> str:
    if domain not in DOMAINS:
        raise UsageError(f"unknown domain {domain!r}", hint="choose one of: " + ", ".join(DOMAINS))
    return domain


@contextlib.contextmanager
def _removed_on_failure(path: Path) -> Iterator[None]:
    try:
        yield
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def add(
    node: Node,
    src: Path,
    *,
    name: str,
    title: str | None = None,
    domain: str = "general",
    description: str = "",
    actor: str,
    fmt: str | None = None,
) -> dict[str, Any]:
    check_dataset_name(name)
    _check_domain(domain)
    _check_text("title", title or "", max_chars=MAX_TITLE, lines=False)
    _check_text("description", description, max_chars=MAX_DESCRIPTION, lines=True)
    src = Path(src)
    if not src.is_file():
        raise InputError(
            f"{src} is not a file", hint="pass the path of a CSV, TSV, Parquet or JSON Lines file"
        )
    with node.store.read() as session:
        _check_name_free(session, name)

    dataset_id = uuid.uuid4().hex
    final = node.data_dir / f"{dataset_id}.parquet"
    # Until the catalog row commits, the file carries the staging name that a node's start-up
    # recovery recognises (see recover_set_aside): a killed import leaves nothing behind.
    staged = node.data_dir / f"{ingest.PARTIAL_PREFIX}{process_tag()}-{final.name}"
    with _removed_on_failure(staged):
        imported = ingest.import_file(src, staged, limits=node.limits, fmt=fmt)
        analysis = _analyse(node, staged, domain=domain, rows=imported.rows, overrides={})
        row = Dataset(
            id=dataset_id,
            name=name,
            title=title or name,
            domain=domain,
            description=description,
            file_name=final.name,
            file_sha256=imported.sha256,
            source_name=src.name,
            source_format=imported.source_format,
            source_encoding=imported.source_encoding,
            rows=imported.rows,
            bytes=imported.bytes,
            created_at=datetime.now(UTC),
            **analysis,
        )
        with node.store.write() as session:
            _check_name_free(session, name)  # a look-alike added meanwhile
            session.add(row)
            session.flush()  # a concurrent add of the same name fails here, before the ledger entry
            log.append(session, actor=actor, action="dataset.added", payload=_ledger_payload(row))
    os.replace(staged, final)
    # what the import decided that the provider should know: values read as missing, a
    # column of numbers kept as text
    return {**_view(row), "import_notes": list(imported.notes)}


def recover_set_aside(node: Node) -> list[str]:
    """Settle the dataset files a dead process set aside before its commit: a staged import
    (``.importing-``) or a removal's file (``.removing-``). Either way the registered datasets
    decide — an import that committed, or a removal that did not, has its file moved to its
    name; any other is deleted. Returns the file names moved into place."""
    set_aside = [
        (p, prefix)
        for prefix in (ingest.PARTIAL_PREFIX, REMOVING_PREFIX)
        for p in node.data_dir.glob(f"{prefix}*")
        if p.is_file() and is_stale(p.name, prefix, node.alive_dir)
    ]
    if not set_aside:
        return []
    with node.store.read() as session:
        registered = set(session.scalars(select(Dataset.file_name)))
    settled = []
    for path, prefix in set_aside:
        rest = path.name[len(prefix) :]
        tag, _, after = rest.partition("-")
        # '<pid>[.<start>]-<file>'; an older version wrote '.removing-<file>' (no tag)
        file_name = after if tag.replace(".", "").isdigit() and after else rest
        if file_name in registered and not (node.data_dir / file_name).exists():
            os.replace(path, node.data_dir / file_name)
            settled.append(file_name)
        else:
            path.unlink(missing_ok=True)
    return settled


def _analyse(
    node: Node, path: Path, *, domain: str, rows: int, overrides: dict[str, str]
) -> dict[str, Any]:
    """Profile, classify, grade and assess a Parquet file; returns the catalog's JSON columns."""
    limits = node.limits
    prof = profile.profile_parquet(path, limits=limits)
    samples = sample_columns(path, limits=limits)
    columns: dict[str, Any] = {}
    chosen: dict[str, str | None] = {}
    findings_by_column: dict[str, list[Finding]] = {}
    for column, values in samples.items():
        findings = classify_column(column, values, min_share=limits.classify_min_share)
        findings_by_column[column] = findings
        override = overrides.get(column)
        if override is not None:
            category = None if override == NO_CATEGORY else override
        else:
            category = _best_category(findings, limits.classify_hint_min_confidence)
        chosen[column] = category
        columns[column] = {
            "category": category,
            "override": override,
            "findings": [f.to_dict() for f in findings],
        }
    grade = grade_dataset(
        _column_findings(chosen, findings_by_column, overrides),
        domain=domain,
        rows=rows,
        rules=load_rules(_rules_override(node)),
    )
    # Redacted: every column holding personal information or identifiers by its category,
    # or whose values confirmed an identifier (an override to 'none' does not publish them),
    # and any text column whose extremes or top values are themselves identifiers.
    sensitive = {
        c for c, cat in chosen.items()
        if (cat and is_personal(cat))
        or any(_confirms_identifier(f.category, f.source) for f in findings_by_column[c])
    }  # fmt: skip
    sensitive |= {col.name for col in prof.columns if _shows_identifier(col)}
    # Validity is measured only against categories the values themselves confirmed (or the
    # provider set): a header-only hint says nothing about what valid values look like.
    checkable = {
        c: cat
        if cat and (overrides.get(c) or _value_confirmed(findings_by_column[c], cat))
        else None
        for c, cat in chosen.items()
    }
    report = quality.assess_quality(path, prof, checkable, limits=limits, now=datetime.now(UTC))
    return {
        "profile": prof.to_dict(redact=sensitive, min_rows=int(limits.min_group_size_floor)),
        "classification": {"min_share": limits.classify_min_share, "columns": columns},
        "grading": grade.to_dict(),
        "quality": report.to_dict(),
    }


def _grade_label(grading: dict[str, Any]) -> str:
    level, sub = grading.get("level"), grading.get("sublevel")
    return f"{level}-{sub}" if sub else str(level)


def _check_name_free(session: Session, name: str) -> None:
    """No dataset of this name, nor one that reads the same: 'ds', 'Ds' and 'ｄｓ' would be
    three datasets an offer, a contract or a consumer could confuse."""
    key = lookalike_key(name)
    for other in session.scalars(select(Dataset.name)):
        if other == name or lookalike_key(other) == key:
            raise Conflict(
                f"a dataset named {other!r} already exists"
                + ("" if other == name else f", which reads the same as {name!r}"),
                hint="choose another --name, or remove it first",
            )


def _confirms_identifier(category: str, source: str) -> bool:
    """The values themselves showed identifiers (ID numbers passing their check digit), not
    only a header naming them or numbers a header calls income."""
    return "values" in source and is_identifier(category)


#: Detectors whose match is a structured identifier on its own (a check digit, a fixed
#: shape); names and addresses are left out, as any short Han text would look like one.
_STRUCTURED = tuple(
    d for d in DETECTORS
    if d.category in {"id_card_cn", "passport", "bank_card", "mobile_cn", "email",
                      "vehicle_plate_cn", "ipv4", "ipv6"}
)  # fmt: skip


def _shows_identifier(col: profile.ColumnProfile) -> bool:
    """A free-text column with a few ID numbers among its notes shows one as its minimum
    (digits sort before Han characters)."""
    if col.kind != "string":
        return False
    shown = [col.min, col.max, *(v for v, _ in col.top_values)]
    return any(isinstance(v, str) and d.match(v) for v in shown for d in _STRUCTURED)


def _best_category(findings: list[Finding], min_confidence: float) -> str | None:
    """The column's category: the best finding the values do not contradict.

    A header hint the values contradict (e.g. 'loan_id' holding contract numbers) stays listed
    as a finding but does not classify the column.
    """
    for finding in findings:
        if finding.confidence >= min_confidence:
            return finding.category
    return None


def _value_confirmed(findings: list[Finding], category: str) -> bool:
    return any(f.category == category and "values" in f.source for f in findings)


def _column_findings(
    chosen: dict[str, str | None], findings: dict[str, list[Finding]], overrides: dict[str, str]
) -> list[ColumnFindings]:
    out = []
    for column, category in chosen.items():
        if column in overrides:
            col_findings = [] if category is None else [override_finding(category)]
        else:
            col_findings = findings[column][:1]
        out.append(ColumnFindings(column=column, findings=col_findings))
    return out


def _rules_override(node: Node) -> Path | None:
    configured = node.config.get("catalog", {}).get("grading_rules")
    if not configured:
        return None
    path = Path(configured)
    return path if path.is_absolute() else node.root / path


def _ledger_payload(row: Dataset) -> dict[str, Any]:
    payload = {
        "id": row.id,
        "name": row.name,
        "title": row.title,
        "domain": row.domain,
        "file_sha256": row.file_sha256,
        "rows": row.rows,
        "columns": [c["name"] for c in row.profile.get("columns", [])],
        "grade": row.grading.get("level"),
        "rules_digest": row.grading.get("rules_digest"),
    }
    if row.description:  # e.g. a derived dataset's provenance: on record with the file's hash
        payload["description"] = row.description
    return payload


def list_datasets(node: Node) -> list[dict[str, Any]]:
    with node.store.read() as session:
        rows = session.scalars(select(Dataset).order_by(Dataset.name)).all()
        return [_summary(r) for r in rows]


def show(node: Node, name: str) -> dict[str, Any]:
    with node.store.read() as session:
        return _view(_get(session, name))


MAX_DESCRIPTION = 20_000  # a paragraph or a provenance record, not a document


def _check_text(what: str, text: str, *, max_chars: int, lines: bool) -> None:
    """Refuse control characters (a terminal escape in a title would restyle every listing
    it is printed in) — line breaks and tabs only where ``lines`` — and over-long text."""
    allowed = "\n\r\t" if lines else ""
    bad = next((ch for ch in text if (ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0)
                and ch not in allowed), None)
    if bad is not None:
        raise InputError(f"the {what} holds the control character U+{ord(bad):04X}",
                         hint=f"give the {what} as plain text")
    if len(text) > max_chars:
        raise InputError(f"the {what} is {len(text):,} characters long; at most {max_chars:,}",
                         hint=f"shorten the {what}")


def remove(node: Node, name: str, *, actor: str) -> dict[str, Any]:
    """Remove a dataset and its file; its offers still in the catalog are withdrawn in the
    same transaction (an offer of nothing would stay listed). Agreements made under them
    stay on record; their next use finds the dataset gone."""
    from dataspace.store.models_contracts import OfferRow

    with node.store.read() as session:
        row = _get(session, name)
    path = node.data_dir / row.file_name
    # set aside until the removal commits (named after this process: a node opened after a
    # kill puts it back, or deletes it if the removal committed; see recover_set_aside)
    parked = path.with_name(f"{REMOVING_PREFIX}{process_tag()}-{row.file_name}")
    if path.exists():
        path.rename(parked)
    try:
        with node.store.write() as session:
            current = _get(session, name)
            offers = session.scalars(
                select(OfferRow).where(OfferRow.dataset_id == current.id,
                                       OfferRow.withdrawn_at.is_(None)).order_by(OfferRow.id)
            ).all()
            for offer in offers:
                offer.withdrawn_at = datetime.now(UTC)
                log.append(session, actor=actor, action="offer.withdrawn",
                           payload={"id": offer.id, "dataset": current.id,
                                    "reason": "its dataset was removed"})
            withdrawn = [offer.id for offer in offers]
            session.flush()
            session.delete(current)
            log.append(
                session,
                actor=actor,
                action="dataset.removed",
                payload={
                    "id": current.id,
                    "name": current.name,
                    "file_sha256": current.file_sha256,
                },
            )
    except BaseException:
        if parked.exists():
            parked.rename(path)
        raise
    parked.unlink(missing_ok=True)
    return {**_summary(row), "offers_withdrawn": withdrawn}


def reclassify(
    node: Node, name: str, *, column: str, category: str, actor: str, reason: str = ""
) -> dict[str, Any]:
    """A provider's correction of one column's category ('none' clears it); regrades and logs.

    Setting aside a category the column's values confirmed (ID numbers that pass their check
    digit) needs a ``reason``; the ledger keeps it with the grade before and after. Such a
    column stays redacted in the profile whatever its category."""
    if category != NO_CATEGORY and category not in CATEGORIES:
        raise UsageError(
            f"unknown category {category!r}",
            hint="choose one of: " + ", ".join(sorted(CATEGORIES)) + f", or '{NO_CATEGORY}'",
        )
    with node.store.read() as session:
        row = _get(session, name)
    columns = row.classification.get("columns", {})
    if column not in columns:
        raise NotFound(
            f"dataset {name!r} has no column {column!r}",
            hint="columns: " + ", ".join(columns),
        )
    confirmed = sorted({
        str(f["category"]) for f in columns[column].get("findings", [])
        if _confirms_identifier(str(f.get("category")), str(f.get("source", "")))
        and f.get("category") != category
    })  # fmt: skip
    reason = reason.strip()
    if confirmed and not reason:
        raise UsageError(
            f"the values of column {column!r} confirm {', '.join(confirmed)}; setting it to "
            f"{category!r} needs a reason",
            hint="say why (e.g. --reason 'synthetic test numbers'); it is kept in the ledger",
        )
    overrides = {c: v["override"] for c, v in columns.items() if v.get("override") is not None}
    previous = columns[column].get("category")
    grade_before = _grade_label(row.grading)
    overrides[column] = category
    analysis = _analyse(
        node, node.data_dir / row.file_name, domain=row.domain, rows=row.rows, overrides=overrides
    )
    with node.store.write() as session:
        current = _get(session, name)
        if current.id != row.id:
            raise Conflict(f"dataset {name!r} changed while reclassifying", hint="try again")
        for key, value in analysis.items():
            setattr(current, key, value)
        log.append(
            session,
            actor=actor,
            action="dataset.reclassified",
            payload={
                "id": current.id,
                "name": name,
                "column": column,
                "from": previous or NO_CATEGORY,
                "to": category,
                "grade": current.grading.get("level"),
                "grade_from": grade_before,
                "grade_to": _grade_label(current.grading),
                "values_confirmed": confirmed,
                "reason": reason,
            },
        )
        return _view(current)


def _summary(row: Dataset) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "title": row.title,
        "domain": row.domain,
        "rows": row.rows,
        "columns": len(row.profile.get("columns", [])),
        "grade": row.grading.get("level"),
        "grade_label": row.grading.get("label"),
        "quality": row.quality.get("overall"),
        "created_at": iso_utc(row.created_at),
    }


def _view(row: Dataset) -> dict[str, Any]:
    return {
        **_summary(row),
        "description": row.description,
        "source": {
            "name": row.source_name,
            "format": row.source_format,
            "encoding": row.source_encoding,
        },
        "file_sha256": row.file_sha256,
        "bytes": row.bytes,
        "profile": row.profile,
        "classification": row.classification,
        "grading": row.grading,
        "quality": row.quality,
    }
