"""`dataspace offer ...`: publish datasets under usage policies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from dataspace.cli.common import (
    JsonOption,
    actor,
    console,
    node,
    print_json,
    read_json_file,
    table,
)
from dataspace.cli.lazy import lazy_module
from dataspace.policy import list_templates

if TYPE_CHECKING:
    from dataspace.services import offers
else:
    offers = lazy_module("dataspace.services.offers")


app = typer.Typer(help="Publish offers: a dataset under a usage policy.", no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    dataset: str = typer.Argument(..., help="Dataset name or id."),
    policy: Path = typer.Option(None, "--policy", help="ODRL Offer, JSON-LD file."),
    template: str = typer.Option(None, "--template", help="A template (see `offer templates`)."),
    param: list[str] = typer.Option(None, "--param", help="Template parameter KEY=VALUE."),
    dp_bounds: list[str] = typer.Option(None, "--dp-bounds", help="Clamping COLUMN=LOWER:UPPER."),
    dp_epsilon: float = typer.Option(None, "--dp-epsilon-per-query", help="ε each query spends."),
    dp_delta: float = typer.Option(None, "--dp-delta", help="δ each query spends (default 0)."),
    max_contributions: int = typer.Option(
        None, "--max-contributions", help="Most rows one individual contributes (default 1)."),
    contributor_column: str = typer.Option(
        None, "--contributor-column",
        help="Whose row each row is (a person or firm id): k counts it, DP queries keep at "
        "most --max-contributions rows of each."),
    price: str = typer.Option(None, "--price", help="Price per job, e.g. '100 CNY'."),
    auto_approve: bool = typer.Option(
        False, "--auto-approve", help="Agree automatically when the policy allows the request."),
    contribution_share: bool = typer.Option(
        False, "--contribution-share",
        help="Federated training also pays this node's share of the job's revenue pool."),
    min_revenue_pool: str = typer.Option(
        None, "--min-revenue-pool",
        help="With --contribution-share: the least pool this node takes part in, e.g. '1000 CNY'."),
    as_json: bool = JsonOption,
) -> None:
    """Publish DATASET under a policy file or a template; it appears in the DSP catalog."""
    doc: Any = None
    if policy is not None:
        doc = read_json_file(policy, "an ODRL policy",
                             hint="the policy is an ODRL Offer in JSON-LD, as docs/policy.md shows")
    view = offers.create(
        node(ctx), dataset, actor=actor(), policy=doc, template=template,
        params=offers.parse_params(param or []), dp_bounds=offers.parse_bounds(dp_bounds or []),
        dp_epsilon_per_query=dp_epsilon, dp_delta=dp_delta,
        max_contributions=max_contributions, contributor_column=contributor_column, price=price,
        auto_approve=auto_approve, contribution_share=contribution_share,
        min_revenue_pool=min_revenue_pool)
    if as_json:
        print_json(view)
        return
    console.print(f"offer {escape(view['id'])} published for {escape(str(view['dataset_name']))}")
    for warning in view.get("warnings", []):
        console.print(f"warning: {escape(warning)}", style="yellow")


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Offers of this node (withdrawn ones included)."""
    rows = offers.list_offers(node(ctx))
    if as_json:
        print_json(rows)
        return
    console.print(table(None, ["id", "dataset", "actions", "auto", "price", "state"], [
        [r["id"], r["dataset_name"],
         ", ".join(p.get("action", "") for p in r["policy"].get("permission", [])),
         "yes" if r["auto_approve"] else "no",
         (r["price"] or {}).get("per_job", ""), r["state"]] for r in rows]))


@app.command("show")
def show(ctx: typer.Context, offer_id: str, as_json: bool = JsonOption) -> None:
    """One offer: its policy, DP parameters and price."""
    view = offers.show(node(ctx), offer_id)
    if as_json:
        print_json(view)
        return
    console.print(f"[bold]{escape(view['id'])}[/bold] on {escape(str(view['dataset_name']))} "
                  f"({view['state']}, auto-approve {'on' if view['auto_approve'] else 'off'})")
    if view["dp"]:
        console.print(f"DP: {escape(json.dumps(view['dp'], ensure_ascii=False))}")
    if view["price"]:
        console.print(f"price: {escape(str(view['price'].get('per_job')))} per job")
    console.print(json.dumps(view["policy"], ensure_ascii=False, indent=2), markup=False)


@app.command("withdraw")
def withdraw(ctx: typer.Context, offer_id: str) -> None:
    """Take an offer out of the catalog (agreements under it stay)."""
    offers.withdraw(node(ctx), offer_id, actor=actor())
    console.print(f"offer {escape(offer_id)} withdrawn")


@app.command("templates")
def templates(as_json: bool = JsonOption) -> None:
    """The policy templates and their parameters."""
    rows: list[dict[str, Any]] = [{"name": t.name, "description": t.description,
             "params": [{"name": p.name, "required": p.required, "help": p.help}
                        for p in t.params]} for t in list_templates()]
    if as_json:
        print_json(rows)
        return
    console.print(table(None, ["template", "description", "required"], [
        [r["name"], r["description"],
         ", ".join(p["name"] for p in r["params"] if p["required"])] for r in rows]))
