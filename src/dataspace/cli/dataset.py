"""`dataspace dataset ...`: import, list, show, remove, reclassify."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from dataspace.cli.common import JsonOption, actor, console, node, print_json, table
from dataspace.cli.lazy import lazy_module

if TYPE_CHECKING:
    from dataspace.services import datasets
else:
    datasets = lazy_module("dataspace.services.datasets")


app = typer.Typer(help="Register and inspect datasets.", no_args_is_help=True)


@app.command("add")
def add(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="CSV, TSV, Parquet or JSON Lines file."),
    name: str = typer.Option(..., "--name", help="Dataset name (Chinese is fine; no '/' or '..')."),
    title: str = typer.Option(None, "--title", help="Human title."),
    domain: str = typer.Option("general", "--domain", help="Sector: finance, health, energy, ..."),
    description: str = typer.Option("", "--description", help="What the data is."),
    fmt: str = typer.Option(None, "--format", help="Force csv, tsv, parquet or jsonl."),
    as_json: bool = JsonOption,
) -> None:
    """Import a file, then profile, classify, grade and assess it."""
    n = node(ctx)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=as_json,
    ) as progress:
        progress.add_task(f"importing {file.name}", total=None)
        view = datasets.add(
            n,
            file,
            name=name,
            title=title,
            domain=domain,
            description=description,
            actor=actor(),
            fmt=fmt,
        )
    if as_json:
        print_json(view)
        return
    _print_view(view)
    for note in view.get("import_notes") or []:
        console.print(f"note: {escape(note)}", style="yellow")


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """List registered datasets."""
    rows = datasets.list_datasets(node(ctx))
    if as_json:
        print_json(rows)
        return
    console.print(
        table(
            None,
            ["name", "title", "domain", "rows", "columns", "grade", "quality"],
            [
                [
                    r["name"],
                    r["title"],
                    r["domain"],
                    f"{r['rows']:,}",
                    r["columns"],
                    _short_grade(r["grade_label"] or ""),
                    _score(r["quality"]),
                ]
                for r in rows
            ],
        )
    )


@app.command("show")
def show(ctx: typer.Context, name: str, as_json: bool = JsonOption) -> None:
    """Profile, classification, grade and quality of one dataset."""
    view = datasets.show(node(ctx), name)
    if as_json:
        print_json(view)
        return
    _print_view(view)


@app.command("remove")
def remove(ctx: typer.Context, name: str) -> None:
    """Remove a dataset and its file, withdrawing its offers (the ledger keeps the record)."""
    removed = datasets.remove(node(ctx), name, actor=actor())
    console.print(f"removed dataset {escape(removed['name'])}")
    for offer_id in removed["offers_withdrawn"]:
        console.print(f"withdrew its offer {escape(offer_id)}")


@app.command("reclassify")
def reclassify(
    ctx: typer.Context,
    name: str,
    column: str = typer.Option(..., "--column", help="Column to correct."),
    category: str = typer.Option(..., "--as", help="Category id, or 'none' to clear."),
    reason: str = typer.Option(
        "", "--reason", help="Why; required to set aside a category the values confirmed."),
    as_json: bool = JsonOption,
) -> None:
    """Correct a column's category; the dataset is regraded and the change logged."""
    view = datasets.reclassify(
        node(ctx), name, column=column, category=category, actor=actor(), reason=reason
    )
    if as_json:
        print_json(view)
        return
    col = view["classification"]["columns"][column]
    console.print(
        f"{escape(name)}.{escape(column)} is now {escape(str(col['category'] or 'none'))}; "
        f"dataset grade {escape(str(view['grade_label']))}"
    )


def _score(value: Any) -> str:
    return "" if value is None else f"{value:.0f}"


def _quality_note(dimension: str, v: dict[str, Any]) -> str:
    """One line a person can read about the figures behind a quality score."""
    if not v.get("applicable", True):
        return str(v.get("reason", "not applicable"))
    if dimension == "completeness":
        return f"{v.get('non_null_cells', 0):,} of {v.get('cells', 0):,} cells filled"
    if dimension == "validity":
        weak = [f"{c} {_share(x['share'])}" for c, x in v.get("columns", {}).items()
                if x["share"] < 1]
        return "below 100%: " + ", ".join(weak) if weak else "every checked value valid"
    if dimension == "uniqueness":
        keys = ", ".join(v.get("key_candidates", [])[:3]) or "none"
        return f"{v.get('duplicate_rows', 0):,} duplicate rows; key candidates: {keys}"
    if dimension == "consistency":
        mixed = [f"{c} {_share(x['share'])}" for c, x in v.get("columns", {}).items()
                 if x["share"] < 1]
        return "mixed formats: " + ", ".join(mixed[:4]) if mixed else "one format per column"
    if dimension == "timeliness":
        return f"newest {v.get('column')} is {v.get('age_days', 0):.0f} days old"
    return ""


def _short_grade(label: str) -> str:
    return label.split(" (")[0]


def _share(share: float) -> str:
    """A share below 1 never printed as 100% (999 of 1,000 read "below 100%: amount 100%")."""
    text = f"{share:.0%}"
    return text if text != "100%" else f"{min(share, 0.999):.1%}"


def _print_view(view: dict[str, Any]) -> None:
    console.print(
        f"[bold]{escape(view['name'])}[/bold] — {escape(view['title'])} "
        f"({escape(view['domain'])}, {view['rows']:,} rows)"
    )
    grading = view["grading"]
    label, rule = escape(str(grading.get("label"))), escape(str(grading.get("rule")))
    column = escape(str(grading.get("column")))
    console.print(f"grade: [bold]{label}[/bold] (rule {rule}, from column {column})")
    classification = view["classification"]["columns"]
    grades = {c["column"]: c for c in grading.get("columns", [])}
    rows = []
    for col in view["profile"]["columns"]:
        cname = col["name"]
        cls = classification.get(cname, {})
        best = (
            (cls.get("findings") or [{}])[0]
            if not cls.get("override")
            else {"reason": "set by provider"}
        )
        rows.append(
            [
                cname,
                col["type"],
                f"{col['null_rate']:.1%}",
                col.get("distinct"),
                cls.get("category") or "",
                _short_grade(grades.get(cname, {}).get("label", "")),
                best.get("reason", "") if cls.get("category") else "",
            ]
        )
    console.print(
        table("columns", ["column", "type", "nulls", "distinct", "category", "grade", "why"], rows)
    )
    quality = view["quality"]
    dims = quality.get("dimensions", {})
    console.print(
        table(
            f"quality (GB/T 36344): overall {_score(quality.get('overall'))}",
            ["dimension", "score", "note"],
            [[d, _score(v.get("score")), _quality_note(d, v)] for d, v in dims.items()],
        )
    )
