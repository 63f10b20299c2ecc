"""`dataspace demo [SCENARIO]`: run a sector scenario end to end on real nodes on loopback."""

from __future__ import annotations

import typer
from rich.console import Console

from dataspace import scenarios

console = Console(highlight=False)


def demo(
    scenario: str = typer.Argument(scenarios.DEFAULT, help="Scenario name (see --list)."),
    list_: bool = typer.Option(False, "--list", help="List the scenarios, one line each."),
    keep: bool = typer.Option(False, "--keep", help="Leave the nodes running; print URLs."),
    size: str = typer.Option("small", "--size", help="small | default | large"),
    seed: int = typer.Option(1, "--seed", help="First generator seed."),
    data: str = typer.Option("synthetic", "--data", help="synthetic | public"),
) -> None:
    """Start the scenario's nodes, load data, negotiate, run the jobs, print the report."""
    if list_:
        for s in scenarios.all():
            typer.echo(s.summary())
        return
    from dataspace.scenarios.report import render
    from dataspace.scenarios.runner import run

    if size not in ("small", "default", "large"):
        raise typer.BadParameter("size is small, default or large")
    chosen = scenarios.get(scenario)
    report = run(chosen, size=size, seed=seed, data=data, keep=keep)
    render(report, console, keep=keep)


def register(app: typer.Typer) -> None:
    app.command("demo", help="Run a 数据要素× sector scenario end to end on real nodes.")(demo)
