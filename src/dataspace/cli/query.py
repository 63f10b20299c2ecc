"""`dataspace query` (governed SQL on a provider, under an agreement) and `dataspace job ...`."""

from __future__ import annotations

import io
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from dataspace.cli.common import (
    ForceOption,
    JsonOption,
    actor,
    check_out,
    console,
    err_console,
    node,
    print_json,
    table,
    write_table,
)
from dataspace.cli.lazy import lazy_module
from dataspace.errors import InputError, UsageError

if TYPE_CHECKING:
    import pyarrow as pa

    from dataspace.services import job_consumer, jobs
    from dataspace.services.job_consumer import QueryOutcome
    from dataspace.services.node import Node
else:
    job_consumer = lazy_module("dataspace.services.job_consumer")
    jobs = lazy_module("dataspace.services.jobs")

job_app = typer.Typer(help="Jobs run on this node or asked of providers.", no_args_is_help=True)

MAX_PRINTED_ROWS = 200


def query(
    ctx: typer.Context,
    sql: str = typer.Argument(..., help="One SELECT over the agreed dataset (DuckDB dialect)."),
    agreement: str = typer.Option(..., "--agreement", help="The agreement's id."),
    as_json: bool = JsonOption,
    as_csv: bool = typer.Option(False, "--csv", help="Print the result as CSV."),
    out: Path = typer.Option(None, "--out", help="Write the result to FILE (.parquet or .csv)."),
    job_id: str = typer.Option(None, "--job-id", help="Job id to use (default: random)."),
    force: bool = ForceOption,
) -> None:
    """Run governed SQL on the provider's node; only policy-safe results come back."""
    if as_json and as_csv:
        raise UsageError("choose one of --json and --csv")
    check_out(out, (".parquet", ".csv"), force=force)
    here = node(ctx)
    job_id = job_id or uuid.uuid4().hex  # named now, so an interruption can say which
    try:
        with err_console.status(f"job {job_id}: waiting for the provider's answer…"):
            outcome = job_consumer.query(here, agreement_id=agreement, sql=sql, job_id=job_id,
                                         actor=actor())
    except KeyboardInterrupt:
        err_console.print(f"[red]interrupted:[/red] job {job_id} may still run at the provider")
        err_console.print(f"  to take its answer, resend: dataspace query --agreement "
                          f"{agreement} --job-id {job_id} SQL (the same SQL)", markup=False)
        raise typer.Exit(130) from None
    if out is not None:
        _write_result(here, outcome, out)
    if as_json:
        rows: list[dict[str, Any]] = [] if out is not None else outcome.table.to_pylist()
        print_json({"meta": outcome.meta, "rows": rows})
        return
    if as_csv:
        import pyarrow.csv as pacsv

        buffer = io.BytesIO()
        pacsv.write_csv(outcome.table, buffer)
        sys.stdout.write(buffer.getvalue().decode("utf-8"))
        return
    if out is None:
        print_table(outcome.table)
    else:
        console.print(f"wrote {outcome.table.num_rows} rows to {escape(str(out))}")
    print_meta(outcome.meta)


def _write_result(here: Node, outcome: QueryOutcome, out: Path) -> None:
    """Write the result to ``out``; if that fails after all (a full disk, a column the format
    cannot hold), keep the bytes the provider sent (Arrow IPC, always writable) in the node's
    folder and say where: the provider does not send a result twice."""
    try:
        write_table(outcome.table, out)
    except InputError as exc:
        from dataspace.scratch import write_whole

        kept = here.root / "received" / f"query-{outcome.meta.get('job_id')}.arrow"
        kept.parent.mkdir(exist_ok=True)
        write_whole(kept, outcome.ipc)
        raise InputError(f"{exc.message}; the result is kept, as sent, at {kept}",
                         hint=f"{exc.hint}; read the kept file with pyarrow.ipc") from None


def print_table(result: pa.Table) -> None:
    rows = result.slice(0, MAX_PRINTED_ROWS).to_pylist()
    console.print(
        table(
            None,
            list(result.column_names),
            [[_cell(r[c]) for c in result.column_names] for r in rows],
        )
    )
    if result.num_rows > MAX_PRINTED_ROWS:
        console.print(f"… {result.num_rows - MAX_PRINTED_ROWS} more rows (use --out or --csv)")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}".rstrip("0").rstrip(".")
    return "" if value is None else str(value)


def print_meta(meta: dict[str, Any]) -> None:
    parts = [f"job {meta.get('job_id')}", f"{meta.get('action')}", f"{meta.get('rows')} rows"]
    if meta.get("action") == "dp-query":
        parts.append(f"ε spent {meta.get('epsilon_spent')}, ε left {meta.get('epsilon_left')}")
    price = meta.get("price") or {}
    if price:
        parts.append(f"price {price.get('amount')} {price.get('currency')}")
    console.print(escape(" · ".join(parts)))
    bounds = meta.get("error_bounds") or {}
    if bounds:
        text = ", ".join(f"{k} ±{float(v):,.2f}" for k, v in bounds.items())
        console.print(escape(f"95% error bounds: {text}"))
    threshold = meta.get("threshold")
    if meta.get("action") == "dp-query" and threshold:
        line = f"groups released only where the noisy count reaches {float(threshold):g}"
        if not meta.get("rows"):
            line += (": none did (fewer, larger groups or an offer with more ε per query "
                     "lower the bar; the threshold follows from ε, δ and the offer alone)")
        console.print(escape(line))
    k = int(meta.get("min_group_size") or 1)
    if meta.get("action") == "governed-query" and not meta.get("rows") and k > 1:
        # an empty answer is not "no such rows": say what the agreement withholds
        console.print(escape(f"no group reached the agreement's minimum of {k} rows: groups "
                             "(and counts) over fewer rows are withheld"))
    if meta.get("action") == "dp-query" and meta.get("contributor_column"):
        console.print(escape(f"at most {meta.get('max_contributions')} rows per "
                             f"{meta['contributor_column']} counted"))  # fmt: skip
    console.print(f"result sha256 {meta.get('result_sha256')}", style="dim")


@job_app.command("list")
def list_(
    ctx: typer.Context,
    agreement: str = typer.Option(None, "--agreement", help="Only this agreement's jobs."),
    role: str = typer.Option(None, "--role", help="provider, consumer, initiator or dealer."),
    state: str = typer.Option(
        None, "--state", help="QUEUED, RUNNING, SUCCEEDED, DENIED or FAILED."),
    as_json: bool = JsonOption,
) -> None:
    """Jobs on this node, newest first."""
    rows = jobs.list_jobs(node(ctx), agreement_id=agreement, role=role, state=state)
    if as_json:
        print_json(rows)
        return
    console.print(
        table(
            None,
            ["id", "role", "peer", "action", "state", "agreement", "created"],
            [
                [
                    r["id"],
                    r["role"],
                    r["peer"],
                    r["action"],
                    r["state"],
                    r["agreement_id"],
                    r["created_at"][:19],
                ]
                for r in rows
            ],
        )
    )


@job_app.command("show")
def show(ctx: typer.Context, job_id: str, as_json: bool = JsonOption) -> None:
    """One job: its SQL, decision, outcome and metadata."""
    view = jobs.get_job(node(ctx), job_id)
    from dataspace.services import mp_store as ms

    # multi-party jobs with every node's step events (a prediction's has no SQL, rows or hash)
    if view["action"] in (*ms.ACTIONS, *ms.TRAINING_ACTIONS) and not as_json:
        from dataspace.cli.mp import print_view
        from dataspace.services import multiparty, predict, training

        read = {ms.TRAIN: training.get_job,
                ms.PREDICT: predict.get_job}.get(view["action"], multiparty.get_job)
        print_view(read(node(ctx), job_id))  # with every node's step events
        return
    if as_json:
        print_json(view)
        return
    console.print(
        f"[bold]job {escape(view['id'])}[/bold] — {view['role']} side, {escape(view['state'])}"
    )
    console.print(
        f"agreement {escape(view['agreement_id'])} with {escape(view['peer'])}, "
        f"{escape(view['action'])}"
    )
    console.print(f"sql: {escape(str(view['sql']))}")
    if view["error"]:
        console.print(f"[red]{escape(view['error'])}[/red]")
    reasons = [r for r in ((view.get("decision") or {}).get("reasons") or []) if not r["held"]]
    for reason in reasons:
        console.print(f"  ✗ {escape(reason['path'])}: {escape(reason['message'])}")
    meta = view.get("meta") or {}
    if view["state"] == jobs.SUCCEEDED:
        print_meta(meta)


def register(app: typer.Typer) -> None:
    app.command("query")(query)
    app.add_typer(job_app, name="job")
