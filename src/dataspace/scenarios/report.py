"""Print a run's report with Rich: contributions, what left each node, the multiplier, bills,
the ledger checkpoint and the verified inclusion proof."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from dataspace.scenarios.base import STEPS_TITLE, signed
from dataspace.scenarios.runner import Report


def render(report: Report, console: Console, *, keep: bool = False) -> None:
    m = report.metric
    console.rule(f"[bold]{report.scenario}[/bold] · size {report.size} · seeds {report.seeds}")
    console.print(
        f"generator {report.generator_version} · params sha256 "
        + ", ".join(f"s{s}:{h[:16]}…" for s, h in report.params_sha256.items())
        + " (in each dataset.added ledger entry)"
    )
    t = Table(title="What each party contributed")
    for c in ("party", "role", "dataset", "rows", "columns"):
        t.add_column(c)
    for row in report.contributed:
        t.add_row(*(str(row[k]) for k in ("party", "role", "dataset", "rows", "columns")))
    console.print(t)
    t = Table(title="What left each node (from its usage records and ledger)")
    for c in ("node", "action", "jobs", "result rows", "bytes out"):
        t.add_column(c)
    for row in report.left_nodes:
        t.add_row(row["node"], str(row["action"]), str(row["jobs"]), str(row["result_rows"]),
                  str(row["bytes_out"]))
    console.print(t)
    console.print(
        "raw rows that left a node: "
        + ("none (no transfer entries in any ledger)" if not report.row_transfers
           else f"{len(report.row_transfers)} transfer entries, allowed by policy")
    )
    t = Table(title=f"The multiplier: {m.metric} ({'lower' if m.lower_is_better else 'higher'}"
              " is better)")
    for c in ("variant", "value", "95% CI", "n"):
        t.add_column(c)
    for e in m.estimates:
        t.add_row(e.variant, f"{e.value:.3f}", f"[{e.low:.3f}, {e.high:.3f}]", str(e.n))
    console.print(t)
    if m.steps:
        t = Table(title=STEPS_TITLE)
        for c in ("step", "gain", "95% CI", "n"):
            t.add_column(c)
        for e in m.steps:
            t.add_row(e.variant, signed(e.value), f"[{signed(e.low)}, {signed(e.high)}]",
                      str(e.n))
        console.print(t)
    console.print(f"ordering {m.ordering}: "
                  f"{'holds' if m.ordering_holds else 'DOES NOT HOLD'} on the point estimates")
    console.print(m.significance())
    for k, v in m.extra.items():
        console.print(f"{k}: {v}")
    for ctl in m.controls:
        c_ = ctl
        console.print(f"control · {c_.name}: expected {c_.expected}; observed {c_.observed} "
                      f"→ {'pass' if c_.passed else 'FAIL'}")
    t = Table(title="Bills (per provider and agreement)")
    for c in ("provider", "consumer", "jobs", "amount"):
        t.add_column(c)
    for b in report.bills:
        t.add_row(b["provider"], str(b["consumer"]), str(b["jobs"]),
                  f"{b['amount']} {b['currency']}")
    console.print(t)
    console.print("[dim]" + report.checkpoint.strip() + "[/dim]")
    p = report.proof
    console.print(
        f"inclusion proof of the final result: {p['node']} entry {p['index']} ({p['action']}) "
        f"in tree size {p['tree_size']} — verified offline with the node's public key"
    )
    if keep:
        for name, url in report.urls.items():
            console.print(f"{name}: {url}/api/v1 (docs at {url}/docs)")
    console.print(f"[green]done in {report.seconds:.1f} s[/green]")
