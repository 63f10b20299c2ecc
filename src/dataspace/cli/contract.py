"""`dataspace contract ...` and `dataspace catalog PEER`: contracts over the Dataspace Protocol."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from dataspace.cli.common import JsonOption, actor, console, err_console, node, print_json, table
from dataspace.cli.lazy import lazy_module
from dataspace.errors import Forbidden

if TYPE_CHECKING:
    from dataspace.services import catalog as catalog_service
    from dataspace.services import negotiation
else:
    catalog_service = lazy_module("dataspace.services.catalog")
    negotiation = lazy_module("dataspace.services.negotiation")


app = typer.Typer(help="Negotiate, inspect, approve and reject contracts.", no_args_is_help=True)


def catalog(ctx: typer.Context, peer: str = typer.Argument(..., help="A member of the space."),
            as_json: bool = JsonOption) -> None:
    """The datasets and offers in PEER's DSP catalog (a signed request)."""
    doc = catalog_service.fetch_catalog(node(ctx), peer)
    rows = catalog_service.summarize(doc)
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print(f"{escape(peer)} offers nothing yet")
    for ds in rows:
        columns = ", ".join(f"{c['name']}:{c['type']}" for c in ds["columns"])
        grade = (ds.get("grade") or {}).get("label") or ""
        console.print(f"[bold]{escape(str(ds['title']))}[/bold] ({escape(str(ds['id']))}, "
                      f"{escape(str(ds['domain']))}, {escape(grade)})")
        console.print(f"  columns: {escape(columns)}")
        console.print(table(None, ["offer", "actions", "purposes", "price per job"], [
            [o["id"], ", ".join(o["actions"]), ", ".join(o["purposes"]) or "any",
             o.get("price") or "free"]
            for o in ds["offers"]]))


@app.command("request")
def request(
    ctx: typer.Context,
    peer: str = typer.Argument(..., help="The provider, a member of the space."),
    offer: str = typer.Option(..., "--offer", help="The offer id from `dataspace catalog`."),
    purpose: str = typer.Option(..., "--purpose", help="Your purpose, e.g. credit-risk."),
    wait: float = typer.Option(30.0, "--wait", help="Seconds to wait for the outcome (0: don't)."),
    as_json: bool = JsonOption,
) -> None:
    """Request a contract under PEER's offer for PURPOSE; wait for FINALIZED or TERMINATED."""
    n = node(ctx)
    view = negotiation.request_contract(n, peer, offer_id=offer, purpose=purpose, actor=actor())
    if wait > 0 and view["state"] not in negotiation.FINAL:
        with console.status(f"negotiating with {peer} ({view['state']})", spinner="dots"):
            view = negotiation.wait(n, view["id"], wait)
    _outcome(view, as_json)


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Negotiations and agreements of this node, both as provider and as consumer."""
    rows = negotiation.list_contracts(node(ctx))
    if as_json:
        print_json(rows)
        return
    console.print(table(None, ["id", "role", "peer", "state", "purpose", "agreement"], [
        [r["id"], r["role"], r["peer"], r["state"], r["purpose"], r["agreement_id"]]
        for r in rows]))


@app.command("show")
def show(ctx: typer.Context, ref: str = typer.Argument(..., help="Negotiation or agreement id."),
         as_json: bool = JsonOption) -> None:
    """A negotiation with its offer, agreement and both signatures checked."""
    view = negotiation.show_contract(node(ctx), ref)
    if as_json:
        print_json(view)
        return
    _print(view)


@app.command("approve")
def approve(ctx: typer.Context, pid: str, as_json: bool = JsonOption) -> None:
    """Provider: agree to a negotiation waiting in REQUESTED; sign and send the agreement."""
    view = negotiation.approve(node(ctx), pid, actor=actor())
    _outcome(view, as_json)


@app.command("reject")
def reject(ctx: typer.Context, pid: str,
           reason: str = typer.Option(..., "--reason", help="Told to the consumer."),
           as_json: bool = JsonOption) -> None:
    """Provider: refuse a negotiation; the consumer receives the reason."""
    view = negotiation.reject(node(ctx), pid, reason=reason, actor=actor())
    _outcome(view, as_json, ending=True)


@app.command("withdraw")
def withdraw(ctx: typer.Context, pid: str,
             reason: str = typer.Option(..., "--reason", help="Told to the provider."),
             as_json: bool = JsonOption) -> None:
    """Consumer: withdraw a request the provider has not agreed to yet."""
    view = negotiation.withdraw(node(ctx), pid, reason=reason, actor=actor())
    _outcome(view, as_json, ending=True)


def _outcome(view: dict[str, Any], as_json: bool, *, ending: bool = False) -> None:
    """Print the negotiation; one that ended TERMINATED is an error (exit 6, refused) unless
    ending it was the command (``reject``, ``withdraw``)."""
    if as_json:
        print_json(view)
    else:
        _print(view)
    if view["state"] == "TERMINATED" and not ending:
        raise Forbidden(f"negotiation {view['id']} ended TERMINATED: "
                        + ("; ".join(view.get("reason") or []) or "no reason given"))


def _print(view: dict[str, Any]) -> None:
    console.print(f"[bold]{escape(view['id'])}[/bold]: {view['state']} "
                  f"({view['role']} with {escape(view['peer'])})")
    console.print(f"offer {escape(str(view['offer_id']))}, purpose {escape(str(view['purpose']))}")
    for reason in view.get("reason") or []:
        err_console.print(f"  reason: {reason}", markup=False)
    ag = view.get("agreement")
    if ag:
        sigs = ag["signatures"]
        console.print(f"agreement {escape(ag['id'])} on {escape(ag['target'])}: "
                      f"provider {escape(ag['provider'])} signature {sigs['provider']}, "
                      f"consumer {escape(ag['consumer'])} signature {sigs['consumer']}")
        console.print(json.dumps(ag["policy"], ensure_ascii=False, indent=2), markup=False)
