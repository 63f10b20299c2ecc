"""`dataspace usage ...` and `dataspace bill`: usage records, statements, bills, reconciliation.

Register with :func:`register` (adds the ``usage`` group and the ``bill`` command).
"""

from __future__ import annotations

import sys
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from dataspace.cli.common import (
    JsonOption,
    actor,
    console,
    node,
    print_json,
    remember_json,
    table,
)
from dataspace.cli.lazy import lazy_module
from dataspace.errors import UsageError

if TYPE_CHECKING:
    from dataspace import metering
    from dataspace.services import usage as service
else:
    metering = lazy_module("dataspace.metering")
    service = lazy_module("dataspace.services.usage")


usage_app = typer.Typer(
    help="Usage records of jobs and their reconciliation with the ledger.",
    invoke_without_command=True,
)

_AGREEMENT = typer.Option(None, "--agreement", help="Only this agreement.", metavar="ID")
_PERIOD = typer.Option(None, "--period", help="Only this month (UTC), e.g. 2026-11.")
_CONSUMER = typer.Option(None, "--consumer", help="Only this consumer (participant name).")
_FORMATS = ("table", "json", "csv")
_LINE_COLUMNS = [
    "finished", "agreement", "consumer", "job", "action", "status", "rows scanned", "bytes out",
    "ε", "cpu s", "amount",
]  # fmt: skip
_TOTAL_COLUMNS = [
    "agreement", "consumer", "jobs", "denied", "failed", "rows scanned", "bytes out", "ε",
    "cpu s", "amount (exact)", "amount",
]  # fmt: skip


def register(app: typer.Typer) -> None:
    """Add ``dataspace usage`` and ``dataspace bill`` to the root app."""
    app.add_typer(usage_app, name="usage")
    app.command("bill")(bill)
    app.command("bills")(bills)


@usage_app.callback()
def usage(
    ctx: typer.Context,
    agreement: str = _AGREEMENT,
    period: str = _PERIOD,
    consumer: str = _CONSUMER,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.",
                                 callback=remember_json),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV (lines and totals)."),
) -> None:
    """List usage records and their totals (no subcommand), or reconcile them."""
    if ctx.invoked_subcommand is not None:
        return
    if as_json and as_csv:
        raise UsageError("choose one of --json and --csv")
    st = metering.Statement(agreement, consumer, period, [])
    st.lines = service.list_usage(node(ctx), agreement, period, consumer)
    if as_json:
        print_json(st.to_dict())
    elif as_csv:
        sys.stdout.write(st.to_csv())
    else:
        _print_statement(st.to_dict(), title="usage")


@usage_app.command("reconcile")
def reconcile(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a summary.",
                                 callback=remember_json),
) -> None:
    """Check every usage record and the totals against the ledger's usage.recorded entries."""
    report = service.reconcile(node(ctx))
    if as_json:
        print_json(report)
        return
    console.print(
        f"reconciled: {report['records']} usage records match "
        f"{report['ledger_entries']} ledger entries"
    )
    _print_totals(report["totals"], "totals from the ledger")
    months = sorted({(line["period"], line["consumer"]) for line in report["late"]})
    for period, consumer in months:
        count = sum(1 for x in report["late"] if (x["period"], x["consumer"]) == (period, consumer))
        console.print(
            f"{count} usage line(s) of {consumer} in {period} came after that month was billed "
            f"and are on no bill: `dataspace bill --period {period} --consumer {consumer} "
            "--issue` bills them"
        )


def bill(
    ctx: typer.Context,
    agreement: str = _AGREEMENT,
    period: str = _PERIOD,
    consumer: str = _CONSUMER,
    fmt: str = typer.Option("table", "--format", help="table, json or csv."),
    issue: bool = typer.Option(
        False, "--issue", help="Issue the bill: give it an id and enter it in the ledger."
    ),
    as_json: bool = typer.Option(False, "--json", help="The same as --format json.",
                                 callback=remember_json),
    bill_id: str = typer.Option(
        None, "--id", metavar="BILL", help="Show this issued bill, as issued (see `dataspace "
        "bills`)."
    ),
) -> None:
    """A statement for an agreement and/or period (a draft unless --issue), or an issued bill."""
    if as_json:  # every other command takes --json
        if fmt not in ("table", "json"):
            raise UsageError("choose one of --json and --format " + fmt)
        fmt = "json"
    if fmt not in _FORMATS:
        raise UsageError(f"unknown format {fmt!r}", hint="use --format table, json or csv")
    if bill_id is not None:
        if issue or agreement or period or consumer:
            raise UsageError("--id shows a bill already issued",
                             hint="leave out --issue, --agreement, --period and --consumer")
        doc = service.issued_bill(node(ctx), bill_id)
    else:
        doc = service.bill(
            node(ctx), agreement, period, consumer, issue=issue, actor=actor() if issue else None
        )
    if fmt == "json":
        print_json(doc)
        return
    st = doc["statement"]
    carried = {
        (str(t["agreement_id"]), str(t["currency"])): (
            Decimal(t["billed_before"]["amount_exact"]), Decimal(t["billed_before"]["amount"])
        )
        for t in st["totals"]
        if t.get("billed_before")
    }
    if fmt == "csv":  # the bill's totals: what it asks, with earlier bills' rounding carried
        statement = metering.Statement(agreement, consumer, period, st["lines"], carried)
        sys.stdout.write(statement.to_csv())
        return
    if doc["bill_id"]:
        console.print(
            f"[bold]bill {escape(doc['bill_id'])}[/bold] issued {doc['issued_at']} "
            f"(ledger entry {doc['ledger_index']})"
        )
    elif not st["lines"]:  # a draft of nothing: say so rather than print an empty bill
        console.print("no unbilled usage matches these filters: there is nothing to bill "
                      "(check --agreement, --consumer and --period with `dataspace usage`; "
                      "bills issued already: `dataspace bills`)")
        return
    else:
        console.print("[bold]draft bill[/bold] (not issued; add --issue)")
    who = doc["consumer"] or "several consumers"
    console.print(
        f"consumer {escape(who)}; agreement {escape(str(doc['agreement_id'] or 'all'))}; "
        f"period {escape(str(doc['period'] or 'all'))}"
    )
    _print_statement(st, title="lines")
    for (agreed, currency), (exact, asked) in carried.items():
        console.print(
            f"{escape(agreed)}: earlier bills carried {exact} {escape(currency)} exactly and "
            f"asked {asked}; this bill asks what rounds the sum of both, less that"
        )
    for due in doc["due"]:
        console.print(f"amount due: [bold]{due['amount']} {escape(due['currency'])}[/bold]")
    console.print(f"sha256 {doc['sha256']}")


def bills(
    ctx: typer.Context,
    agreement: str = _AGREEMENT,
    period: str = _PERIOD,
    consumer: str = _CONSUMER,
    as_json: bool = JsonOption,
) -> None:
    """Issued bills, oldest first, each checked against its ledger entry."""
    found = service.issued_bills(node(ctx), agreement, period, consumer)
    if as_json:
        print_json(found)
        return
    if not found:
        console.print("no issued bill matches these filters (a draft: `dataspace bill`)")
        return
    console.print(table(
        "issued bills",
        ["bill", "issued", "consumer", "agreement", "period", "lines", "due", "ledger entry"],
        [[b["bill_id"], b["issued_at"][:19].replace("T", " "), b["consumer"],
          b["agreement_id"] or "all", b["period"] or "all", b["lines"],
          ", ".join(f"{d['amount']} {d['currency']}" for d in b["due"]), b["ledger_index"]]
         for b in found],
    ))
    console.print("one bill as issued: `dataspace bill --id BILL`", style="dim")


def _print_statement(st: dict[str, Any], *, title: str) -> None:
    console.print(
        table(
            title,
            _LINE_COLUMNS,
            [
                [
                    line["finished_at"][:19].replace("T", " "),
                    line["agreement_id"],
                    line["consumer"],
                    line["job_id"],
                    line["action"],
                    line["status"],
                    f"{line['rows_scanned']:,}",
                    f"{line['bytes_out']:,}",
                    line["epsilon_spent"],
                    line["cpu_seconds"],
                    f"{line['amount']} {line['currency']}",
                ]
                for line in st["lines"]
            ],
        )
    )
    _print_totals(st["totals"], "totals per agreement")


def _print_totals(totals: list[dict[str, Any]], title: str) -> None:
    console.print(
        table(
            title,
            _TOTAL_COLUMNS,
            [
                [
                    t["agreement_id"],
                    t["consumer"],
                    t["jobs"],
                    t["denied"],
                    t["failed"],
                    f"{t['rows_scanned']:,}",
                    f"{t['bytes_out']:,}",
                    t["epsilon_spent"],
                    t["cpu_seconds"],
                    f"{t['amount_exact']} {t['currency']}",
                    f"{t['amount']} {t['currency']}",
                ]
                for t in totals
            ],
        )
    )
