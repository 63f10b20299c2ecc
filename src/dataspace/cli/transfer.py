"""`dataspace transfer ...`: rows under an agreement, through the DSP transfer process."""

from __future__ import annotations

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
    node,
    print_json,
    table,
)
from dataspace.cli.lazy import lazy_module
from dataspace.errors import Forbidden, UsageError

if TYPE_CHECKING:
    from dataspace.services import transfers
else:
    transfers = lazy_module("dataspace.services.transfers")


app = typer.Typer(help="Transfers of rows under agreements (DSP).", no_args_is_help=True)


@app.command("request")
def request(
    ctx: typer.Context,
    agreement: str = typer.Option(..., "--agreement", help="The agreement's id."),
    mode: str = typer.Option(..., "--mode", help="raw or pseudonymized."),
    out: Path = typer.Option(None, "--out", help="Copy the received file to FILE.parquet."),
    wait: float = typer.Option(30.0, "--wait", help="Seconds to wait for the data (0: don't)."),
    force: bool = ForceOption,
    as_json: bool = JsonOption,
) -> None:
    """Ask the provider for the agreed rows; wait until they arrive (or the provider refuses)."""
    if wait < 0:
        raise UsageError(f"--wait {wait:g}: give the seconds to wait, 0 or more")
    if mode not in transfers.MODES:
        raise UsageError(f"unknown mode {mode!r}", hint="use --mode raw or --mode pseudonymized")
    check_out(out, (".parquet",), force=force)
    here = node(ctx)
    view = transfers.request_transfer(here, agreement_id=agreement, mode=mode, actor=actor())
    if wait > 0 and view["state"] not in transfers.FINAL:
        with console.status("waiting for the provider …"):
            view = transfers.wait(here, view["id"], wait)
    if out is not None and view["state"] == "COMPLETED":
        transfers.copy_received(view, out.resolve())
        view = {**view, "out": str(out.resolve())}
    if as_json:
        print_json(view)
    else:
        _print(view)
    if view["state"] == "TERMINATED":
        raise Forbidden(f"transfer {view['id']} ended TERMINATED: "
                        + ("; ".join(view.get("reason") or []) or "no reason given"))


def _print(view: dict[str, Any]) -> None:
    lines = [
        f"transfer {view['id']} · {view['role']} · {view['state']}",
        f"agreement {view['agreement_id']} · peer {view['peer']} · mode {view['mode']}",
    ]
    if view.get("sha256"):
        lines.append(f"sha256 {view['sha256']} · {view.get('rows')} rows · "
                     f"{view.get('bytes')} bytes")
    if view.get("columns"):
        lines.append("columns: " + ", ".join(view["columns"]))
    if view.get("out") or view.get("file"):
        lines.append(f"file: {view.get('out') or view.get('file')}")
    if view.get("reason"):
        lines.append("reason: " + "; ".join(view["reason"]))
    for line in lines:
        console.print(escape(line))


@app.command("list")
def list_(
    ctx: typer.Context,
    agreement: str = typer.Option(None, "--agreement", help="Only this agreement's."),
    role: str = typer.Option(None, "--role", help="provider or consumer."),
    as_json: bool = JsonOption,
) -> None:
    """Transfers on this node, newest first."""
    rows = transfers.list_transfers(node(ctx), agreement_id=agreement, role=role)
    if as_json:
        print_json(rows)
        return
    console.print(table(None, ["id", "role", "peer", "state", "mode", "rows", "agreement"], [
        [r["id"], r["role"], r["peer"], r["state"], r["mode"], r["rows"], r["agreement_id"]]
        for r in rows]))


@app.command("show")
def show(ctx: typer.Context, pid: str = typer.Argument(..., help="The transfer's id."),
         as_json: bool = JsonOption) -> None:
    """One transfer: state, mode, hash, rows, columns, file, reason."""
    view = transfers.show_transfer(node(ctx), pid)
    if as_json:
        print_json(view)
    else:
        _print(view)


@app.command("terminate")
def terminate(
    ctx: typer.Context,
    pid: str = typer.Argument(..., help="The transfer's id."),
    reason: str = typer.Option(..., "--reason", help="Why; the peer is told."),
    as_json: bool = JsonOption,
) -> None:
    """End a transfer: a provider revokes its grant, a consumer cancels its request."""
    view = transfers.end_transfer(node(ctx), pid, reason=reason, actor=actor())
    if as_json:
        print_json(view)
    else:
        _print(view)
