"""`dataspace psi`, `dataspace aggregate`, and `dataspace job retry|watch` (multi-party jobs).

The commands run the job from this process as the initiator (like `dataspace query`), with a
live progress bar fed by every node's step events; `job watch ID` follows a job started
elsewhere (the API, another terminal) by polling this node's view of it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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
from dataspace.errors import UsageError
from dataspace.settings import DEFAULT_AGGREGATE_BOUND

if TYPE_CHECKING:
    from dataspace.services import mp_store as ms
    from dataspace.services import multiparty
    from dataspace.services.node import Node
else:
    ms = lazy_module("dataspace.services.mp_store")
    multiparty = lazy_module("dataspace.services.multiparty")


REVEAL = ("me", "both", "size", "align")
ENGINES = ("dh", "rr22")


def _bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _run_with_bar(label: str, run: Any, as_json: bool) -> dict[str, Any]:
    if as_json or not console.is_terminal:
        return dict(run(None))
    with _bar() as bar:
        task = bar.add_task(label, total=None, last="")

        def on_step(event: dict[str, Any], progress: dict[str, Any]) -> None:
            bar.update(
                task,
                completed=progress.get("done", 0),
                total=progress.get("total") or None,
                last=escape(f"{event.get('node')}: {event.get('name')} {event.get('state')}"),
            )

        return dict(run(on_step))


def psi(
    ctx: typer.Context,
    agreement: list[str] = typer.Option(
        ..., "--agreement", help="Agreement with a participant (repeat, one per participant)."
    ),
    with_: list[str] = typer.Option(None, "--with", help="The participant of each --agreement."),
    on: str = typer.Option(..., "--on", help="Key column(s): 'credit_code:uscc' or 'a:text,b'."),
    peer_key: list[str] = typer.Option(
        None, "--peer-key",
        help="PEER=COLUMN(S): the key as that participant names it, when not as --on does "
        "(e.g. tax-bureau=纳税人识别号:uscc; repeat per participant).",
    ),
    dataset: str = typer.Option(..., "--dataset", help="Your dataset holding the key."),
    reveal: str = typer.Option("me", "--reveal", help="me | both | size | align (3+: me)."),
    engine: str = typer.Option(
        "dh", "--engine", help="dh | rr22 (RR22 through spu: not for --reveal size)."
    ),
    out: Path = typer.Option(None, "--out", help="Write your intersecting keys (.csv/.parquet)."),
    force: bool = ForceOption,
    as_json: bool = JsonOption,
) -> None:
    """Private set intersection with one or more nodes; each checks its own agreement."""
    if reveal not in REVEAL:
        raise UsageError(f"--reveal must be one of {', '.join(REVEAL)}")
    if engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}")
    if out is not None and reveal == "size":  # refused before the job runs (and is billed)
        raise UsageError("--reveal size keeps no keys to write to --out",
                         hint="leave out --out, or use --reveal me, both or align")
    check_out(out, (".csv", ".parquet"), force=force)
    peer_keys = _peer_keys(peer_key or [], with_ or [])
    n = node(ctx)
    view = _run_with_bar(
        "PSI",
        lambda progress: multiparty.run_psi(
            n,
            agreements=agreement,
            peers=with_ or None,
            peer_keys=peer_keys or None,
            dataset=dataset,
            key=on,
            mode=reveal,
            engine=engine,
            actor=actor(),
            progress=progress,
        ),
        as_json,
    )
    if out is not None:
        write_table(multiparty.intersection_keys(n, view["id"]), out)  # kept under mp/ too
    if as_json:
        print_json(view)
        return
    result = view.get("result") or {}
    console.print(
        f"job {view['id']}: {result.get('size')} keys in common (yours: {result.get('own_size')})"
    )
    for peer in result.get("per_peer") or []:
        console.print(f"  {escape(str(peer['peer']))}: {peer['peer_size']} distinct keys")
    if result.get("rows_file"):
        console.print(
            f"rows kept at {escape(str(result['rows_file']))} (under the data dir)", style="dim"
        )
    if out is not None:
        console.print(f"wrote the intersecting keys to {escape(str(out))}")


def _peer_keys(values: list[str], peers: list[str]) -> dict[str, str]:
    """``--peer-key PEER=SPEC`` options as a dict; each PEER once, and among ``--with``."""
    keys: dict[str, str] = {}
    for value in values:
        peer, sep, spec = value.partition("=")
        peer, spec = peer.strip(), spec.strip()
        if not sep or not peer or not spec:
            raise UsageError(f"--peer-key {value!r} is not PEER=COLUMN",
                             hint="e.g. --peer-key tax-bureau=纳税人识别号:uscc")
        if peer in keys:
            raise UsageError(f"--peer-key names {peer} twice")
        if peers and peer not in peers:
            raise UsageError(f"--peer-key names {peer}, which no --with names",
                             hint="participants: " + ", ".join(peers))
        keys[peer] = spec
    return keys


def aggregate(
    ctx: typer.Context,
    agreement: list[str] = typer.Option(
        ..., "--agreement", help="Agreement with a party (repeat, one per party)."
    ),
    with_: list[str] = typer.Option(None, "--with", help="The party of each --agreement."),
    columns: str = typer.Option(..., "--columns", help="Columns to aggregate: c1,c2."),
    op: str = typer.Option("sum", "--op", help="sum | mean | count."),
    epsilon: float = typer.Option(
        None, "--epsilon", help="DP: each party noises its own vector before masking."
    ),
    bound: float = typer.Option(
        DEFAULT_AGGREGATE_BOUND, "--bound", help="Largest |local sum| any party may contribute."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Secure aggregation: this node coordinates, parties send only masked vectors."""
    n = node(ctx)
    view = _run_with_bar(
        "secure aggregation",
        lambda progress: multiparty.run_aggregate(
            n,
            agreements=agreement,
            peers=with_ or None,
            columns=columns.split(","),
            op=op,
            epsilon=epsilon,
            bound=bound,
            actor=actor(),
            progress=progress,
        ),
        as_json,
    )
    if as_json:
        print_json(view)
        return
    result = view.get("result") or {}
    values = result.get("values") or {}
    noise = result.get("noise_error95")
    rows = [[k, f"{v:,.6f}"] for k, v in values.items()]
    console.print(table(f"{op} over {result.get('parties')} parties", ["column", op], rows))
    said = [f"count {result['count']:,}" if result.get("count") is not None
            else "count withheld (DP)" if noise is not None else "",
            f"rounding error ≤ {result.get('error_bound'):.3g}"]
    if noise is not None:  # the figure that matters with DP: the rounding error is tiny
        said.append(f"DP noise within ±{noise:,.6g} per value (95 %), ε {result.get('epsilon')}")
    console.print(" · ".join(s for s in said if s))
    drowned = [k for k, v in values.items() if noise is not None and noise > abs(v)]
    if drowned:
        console.print(f"[yellow]the noise can exceed the value of {', '.join(drowned)}[/yellow]: "
                      "raise --epsilon or lower --bound (the largest local sum a party may add) "
                      "for a usable answer")
    console.print(f"job {view['id']}", style="dim")


def retry(ctx: typer.Context, job_id: str, as_json: bool = JsonOption) -> None:
    """Start a failed multi-party job again (new job id, fresh keys and secrets)."""
    n = node(ctx)
    view = _run_with_bar(
        "retry",
        lambda progress: multiparty.retry(n, job_id, actor=actor(), progress=progress),
        as_json,
    )
    if as_json:
        print_json(view)
        return
    console.print(
        f"job {view['id']} (attempt {view['attempt']}, retry of {job_id}): {view['state']}"
    )


def watch(
    ctx: typer.Context,
    job_id: str,
    interval: float = typer.Option(0.5, "--interval", help="Seconds between polls."),
    timeout: float = typer.Option(3600, "--timeout", help="Give up after this many seconds."),
) -> None:
    """Follow a multi-party job: a live progress bar fed by every node's step events."""
    follow(node(ctx), job_id, interval, timeout)


#: `job watch` exits 0 for a job that SUCCEEDED, 1 for one that FAILED or was DENIED, and this
#: (as GNU timeout does) when --timeout ran out first: the job goes on
STILL_RUNNING = 124


def follow(
    n: Node, job_id: str, interval: float, timeout: float,
    get_job: Callable[[Node, str], dict[str, Any]] | None = None,
) -> None:
    """The progress bar of ``watch``; ``get_job`` reads the job's view (a training job's
    has its own reader), by default a multi-party job's. Exits as :data:`STILL_RUNNING`
    says."""
    read = get_job or multiparty.get_job
    read(n, job_id)  # an unknown id is NotFound before any bar is drawn
    deadline = time.monotonic() + timeout
    with _bar() as bar:
        task = bar.add_task(f"job {job_id[:12]}", total=None, last="")
        while True:
            view = read(n, job_id)
            progress, steps = view["progress"], view["steps"]
            last = steps[-1] if steps else {}
            bar.update(
                task,
                completed=progress.get("done", 0),
                total=progress.get("total") or None,
                last=escape(_step_line(last, view["state"])),
            )
            if ms.is_final(view["state"]) or time.monotonic() > deadline:
                break
            time.sleep(interval)
    print_view(view)
    if not ms.is_final(view["state"]):
        err_console.print(f"still {view['state']} after {timeout:g} s: stopped watching (the "
                          f"job goes on; `dataspace job watch {job_id}` follows it again)")
        raise typer.Exit(STILL_RUNNING)
    if view["state"] != "SUCCEEDED":
        raise typer.Exit(1)


def _step_line(step: dict[str, Any], job_state: str) -> str:
    """``node: name state [JOB STATE]``, the state said once (a failed step is named so)."""
    name, state = str(step.get("name", "")), str(step.get("state", ""))
    said = name if state in ("", name) else f"{name} {state}"
    return f"{step.get('node', '')}: {said} [{job_state}]"


def print_view(view: dict[str, Any]) -> None:
    console.print(
        f"[bold]job {escape(view['id'])}[/bold] — {view['action']}, "
        f"{view['role']} side, {escape(view['state'])} (attempt {view['attempt']})"
    )
    console.print(f"with {escape(view['peer'])}")
    if view["action"] == ms.PSI:
        params = view.get("params") or {}
        engine, mode = params.get("engine") or "dh", params.get("mode")
        console.print(f"engine {escape(str(engine))}, mode {escape(str(mode))}")
    if view.get("error"):
        console.print(f"[red]{escape(str(view['error'].get('message')))}[/red]")
    for name, value in (view.get("result") or {}).items():
        if value is None:
            continue
        shown = (json.dumps(value, ensure_ascii=False, default=str)
                 if isinstance(value, dict | list) else str(value))
        console.print(f"{escape(name)}: {escape(shown[:300])}")
    rows = [
        [e.get("node"), e.get("step"), e.get("name"), e.get("state"), e.get("at", "")[11:19]]
        for e in view.get("steps") or []
    ]
    if rows:
        console.print(table(None, ["node", "step", "name", "state", "at"], rows))


def register(app: typer.Typer, job_app: typer.Typer) -> None:
    app.command("psi")(psi)
    app.command("aggregate")(aggregate)
    job_app.command("retry")(retry)
    job_app.command("watch")(watch)
