"""Run a scenario end to end on real nodes and report what it showed.

``run(scenario, size=..., seed=...)``: a fresh space on loopback (``cluster.py``), every party's
data registered with its node (``dataset add``; the generator's version and parameter hash are in
the title, so in the ``dataset.added`` ledger entry), every offer published and negotiated over
the Dataspace Protocol, the flow run through the nodes' APIs once per seed, the metric computed,
and a report built from the nodes' own records: usage, bills, ledgers (what left each node),
and an inclusion proof of the final result verified offline with the consumer's public key.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from dataspace.errors import UsageError
from dataspace.ledger.proof import verify_inclusion_bundle
from dataspace.policy import from_template
from dataspace.policy.jsonld import to_jsonld
from dataspace.scenarios import cluster as cluster_mod
from dataspace.scenarios.api import NodeApi
from dataspace.scenarios.base import Generated, MetricResult, Scenario
from dataspace.services import datasets as dataset_service

SEEDS = {"small": 2, "default": 3, "large": 5}
ROW_ACTIONS = ("transfer.served", "transfer.completed")
RESULT_ACTIONS = ("mp.completed", "job.result_received", "transfer.received")


@dataclass
class FlowContext:
    """What a flow may use: the nodes' APIs, its agreements, the consumer's own tables."""

    scenario: Scenario
    seed: int
    generated: Generated
    api: dict[str, NodeApi]
    agreements: dict[str, str]
    names: dict[tuple[str, str], str]  # (party, dataset) -> registered name
    roots: dict[str, Path]
    progress: Progress | None = None
    task: Any = None
    released: dict[str, Any] = field(default_factory=dict)

    def dataset(self, party: str, name: str) -> str:
        return self.names[(party, name)]

    def own(self, party: str, name: str) -> pa.Table:
        """A party's own table (the flow may read the consumer's own data only)."""
        return next(t for n, t in self.generated.tables[party] if n == name)

    def step(self, text: str) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, description=text)
            self.progress.advance(self.task)

    def kept_positions(self, party: str, view: dict[str, Any]) -> list[int]:
        """Row positions a PSI job kept at ``party``'s node (its own dataset rows)."""
        rows_file = self.roots[party] / "data" / view["result"]["rows_file"]
        return [int(p) for p in pq.read_table(rows_file).column("position").to_pylist()]


@dataclass
class Report:
    scenario: str
    size: str
    seeds: list[int]
    params_sha256: dict[int, str]
    generator_version: str
    contributed: list[dict[str, Any]]
    left_nodes: list[dict[str, Any]]
    row_transfers: list[dict[str, Any]]
    bills: list[dict[str, Any]]
    metric: MetricResult
    checkpoint: str
    proof: dict[str, Any]
    urls: dict[str, str]
    seconds: float
    released: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def _progress(show: bool) -> Iterator[Progress | None]:
    if not show:
        yield None
        return
    with Progress(
        TextColumn("[bold]{task.description:<48}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        transient=False,
    ) as progress:
        yield progress


MAX_SEED = 2**63 - 1  # a training job's seed travels as a signed 64-bit integer


def check_run(scenario: Scenario, *, seed: int, data: str, seeds: int = 1) -> None:
    """Refuse what a scenario cannot run, before any node starts."""
    if data not in ("synthetic", "public"):
        raise UsageError(f"--data is synthetic or public, not {data!r}")
    if data == "public" and scenario.public_data is None:
        from dataspace import scenarios  # the registry imports this module

        with_public = ", ".join(s.name for s in scenarios.all() if s.public_data)
        raise UsageError(f"{scenario.name} has synthetic data only",
                         hint=f"drop --data public; scenarios with public data: {with_public}")
    if seed < 0:
        raise UsageError(f"--seed must be 0 or more, not {seed}")
    if seed + seeds - 1 > MAX_SEED:  # else refused ~45 s in, by a node, naming body.seed
        raise UsageError(f"--seed must be at most {MAX_SEED - seeds + 1} for {seeds} seed(s), "
                         f"not {seed}")


def run(
    scenario: Scenario,
    *,
    size: str = "small",
    seed: int = 1,
    seeds: int | None = None,
    data: str = "synthetic",
    keep: bool = False,
    workdir: Path | None = None,
    show_progress: bool = True,
) -> Report:
    """Run ``scenario`` on fresh nodes; nodes stop at the end unless ``keep``."""
    with _exit_on_hangup_or_terminate():
        return _run(scenario, size=size, seed=seed, seeds=seeds, data=data, keep=keep,
                    workdir=workdir, show_progress=show_progress)


@contextmanager
def _exit_on_hangup_or_terminate() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) end the run as Ctrl-C does, through its clean-up:
    the nodes stop and the run's folder (node keys, generated data) is removed. In the main
    thread only (where Python runs signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    ours = (signal.SIGTERM, signal.SIGHUP)

    def leave(signum: int, frame: FrameType | None) -> None:
        for sig in ours:  # a second signal must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    # a signal ignored on purpose (SIGHUP under nohup) stays ignored
    previous = {sig: signal.getsignal(sig) for sig in ours}
    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(sig, leave)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(
    scenario: Scenario,
    *,
    size: str,
    seed: int,
    seeds: int | None,
    data: str,
    keep: bool,
    workdir: Path | None,
    show_progress: bool,
) -> Report:
    per_size = getattr(scenario, "seeds", None) or SEEDS  # a scenario may set its own counts
    n_seeds = seeds or (1 if data == "public" else int(per_size[size]))
    check_run(scenario, seed=seed, data=data, seeds=n_seeds)
    seed_list = [seed + i for i in range(n_seeds)]
    t0 = time.perf_counter()
    own_tmp = None
    if workdir is None:
        own_tmp = Path(tempfile.mkdtemp(prefix=f"dataspace-{scenario.name}-"))
        workdir = own_tmp
    parties = scenario.parties()
    cluster = cluster_mod.create(
        workdir,
        [p.name for p in parties],
        space=f"demo-{scenario.name}",
        dealer=scenario.needs_training,  # federated training: the operator deals randomness
    )
    apis: dict[str, NodeApi] = {}
    try:
        with _progress(show_progress) as progress:
            gens = {s: scenario.generate(size, s, data) for s in seed_list}
            names = _register(scenario, cluster, gens, progress)
            cluster.start(outlive=keep)  # with --keep the nodes run on after this process
            apis = {n: NodeApi(n, p.url, p.admin_token) for n, p in cluster.nodes.items()}
            runs = []
            for s in seed_list:
                agreements = _negotiate(scenario, apis, names, s, progress)
                ctx = FlowContext(
                    scenario=scenario,
                    seed=s,
                    generated=gens[s],
                    api=apis,
                    agreements=agreements,
                    names={k[1:]: v for k, v in names.items() if k[0] == s},
                    roots={n: p.root for n, p in cluster.nodes.items()},
                    progress=progress,
                )
                if progress is not None:
                    ctx.task = progress.add_task(f"seed {s}: flow", total=None)
                released = scenario.flow(ctx)
                if progress is not None:
                    progress.update(ctx.task, total=progress.tasks[-1].completed)
                runs.append((s, gens[s], released))
            metric = scenario.metric(runs)
        report = _report(scenario, size, seed_list, gens, cluster, apis, metric, t0)
        report.released = [{"seed": s, **_summarise(r)} for s, _, r in runs]
        return report
    finally:
        for api in apis.values():
            api.close()
        if not keep:
            cluster.stop()
            if own_tmp is not None:
                shutil.rmtree(own_tmp, ignore_errors=True)


def _register(
    scenario: Scenario,
    cluster: cluster_mod.Cluster,
    gens: dict[int, Generated],
    progress: Progress | None,
) -> dict[tuple[int, str, str], str]:
    """`dataset add` for every party, seed and table (before the servers start)."""
    names: dict[tuple[int, str, str], str] = {}
    total = sum(len(t) for g in gens.values() for t in g.tables.values())
    task = progress.add_task("registering datasets", total=total) if progress else None
    for s, gen in gens.items():
        for party, tables in gen.tables.items():
            node = cluster.nodes[party].open()
            try:
                for name, table in tables:
                    registered = f"{name}_s{s}"
                    path = cluster.workdir / f"{party}-{registered}.parquet"
                    pq.write_table(table, path)
                    title = (
                        f"{scenario.name} {name} · generator {gen.version} "
                        f"params sha256:{gen.params_sha256}"
                    )
                    dataset_service.add(
                        node,
                        path,
                        name=registered,
                        title=title,
                        domain="general",
                        actor=cluster_mod.ACTOR,
                    )
                    for ds, column, category in gen.reclassify.get(party, []):
                        if ds == name:
                            dataset_service.reclassify(
                                node,
                                registered,
                                column=column,
                                category=category,
                                actor=cluster_mod.ACTOR,
                            )
                    names[(s, party, name)] = registered
                    if progress is not None and task is not None:
                        progress.advance(task)
            finally:
                node.close()
    return names


def _negotiate(
    scenario: Scenario,
    apis: dict[str, NodeApi],
    names: dict[tuple[int, str, str], str],
    seed: int,
    progress: Progress | None,
) -> dict[str, str]:
    """Publish each offer on its provider and negotiate it from the consumer (DSP)."""
    specs = scenario.offers()
    task = (
        progress.add_task(f"seed {seed}: offers and contracts", total=len(specs))
        if (progress)
        else None
    )
    agreements: dict[str, str] = {}
    for spec in specs:
        body: dict[str, Any] = {
            "dataset": names[(seed, spec.provider, spec.dataset)],
            "price": spec.price,
            "auto_approve": True,
        }
        if spec.action:
            policy = from_template(spec.template, **spec.params)
            policy = replace(
                policy, permissions=(replace(policy.permissions[0], action=spec.action),)
            )
            body["policy"] = to_jsonld(policy)
        else:
            body["template"] = spec.template
            body["params"] = spec.params
        if spec.dp_bounds:
            body["dp_bounds"] = {k: list(v) for k, v in spec.dp_bounds.items()}
            body["dp_epsilon_per_query"] = spec.dp_epsilon_per_query
            body["dp_delta"] = spec.dp_delta
            body["max_contributions"] = spec.dp_max_contributions
            body["contributor_column"] = spec.dp_contributor
        offer = apis[spec.provider].create_offer(**body)
        view = apis[spec.consumer].negotiate(spec.provider, offer["id"], spec.purpose)
        agreement = view.get("agreement_id")
        if view.get("state") != "FINALIZED" or not agreement:
            raise cluster_mod_error(f"negotiation for {spec.ref} ended {view.get('state')}")
        agreements[spec.ref] = str(agreement)
        if progress is not None and task is not None:
            progress.advance(task)
    return agreements


def cluster_mod_error(message: str) -> Exception:
    from dataspace.scenarios.base import ScenarioError

    return ScenarioError(message)


def _summarise(released: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in released.items() if isinstance(v, (int, float, str))}


def _report(
    scenario: Scenario,
    size: str,
    seeds: list[int],
    gens: dict[int, Generated],
    cluster: cluster_mod.Cluster,
    apis: dict[str, NodeApi],
    metric: MetricResult,
    t0: float,
) -> Report:
    contributed = []
    for party in scenario.parties():
        tables = gens[seeds[0]].tables.get(party.name, [])
        for name, table in tables:
            contributed.append(
                {
                    "party": party.name,
                    "role": party.role,
                    "dataset": name,
                    "rows": table.num_rows,
                    "columns": table.num_columns,
                }
            )
    left: list[dict[str, Any]] = []
    transfers: list[dict[str, Any]] = []
    bills: list[dict[str, Any]] = []
    for name, api in apis.items():
        usage = api.usage()
        by_action: dict[str, dict[str, Any]] = {}
        for rec in usage:
            if rec.get("status") != "completed":
                continue
            row = by_action.setdefault(
                rec.get("action", "?"),
                {
                    "node": name,
                    "action": rec.get("action"),
                    "jobs": 0,
                    "result_rows": 0,
                    "bytes_out": 0,
                },
            )
            row["jobs"] += 1
            row["result_rows"] += int(rec.get("result_rows") or 0)
            row["bytes_out"] += int(rec.get("bytes_out") or 0)
        left.extend(by_action.values())
        for entry in api.entries():
            if entry["entry"].get("action") in ROW_ACTIONS:
                transfers.append(
                    {"node": name, **entry["payload"], "action": entry["entry"]["action"]}
                )
        agreements = sorted({str(r["agreement_id"]) for r in usage if r.get("agreement_id")})
        for agreement in agreements:
            bill = api.bill(agreement)
            bills.append({"provider": name, "agreement": agreement, **_bill_summary(bill)})
    consumer = scenario.consumer()
    entries = apis[consumer].entries()
    final = max(
        (e for e in entries if e["entry"].get("action") in RESULT_ACTIONS),
        key=lambda e: int(e["index"]),
    )
    bundle = apis[consumer].inclusion_proof(int(final["index"]))
    key = apis[consumer].identity().get("verifier_key", "")
    verified = verify_inclusion_bundle(bundle, key)  # raises when it does not verify
    proof = {
        "node": consumer,
        "index": int(final["index"]),
        "action": final["entry"].get("action"),
        "tree_size": getattr(verified, "tree_size", None),
        "verified": True,
    }
    return Report(
        scenario=scenario.name,
        size=size,
        seeds=seeds,
        params_sha256={s: g.params_sha256 for s, g in gens.items()},
        generator_version=gens[seeds[0]].version,
        contributed=contributed,
        left_nodes=left,
        row_transfers=transfers,
        bills=bills,
        metric=metric,
        checkpoint=apis[consumer].checkpoint(),
        proof=proof,
        urls={n: p.url for n, p in cluster.nodes.items()},
        seconds=time.perf_counter() - t0,
    )


def _bill_summary(bill: dict[str, Any]) -> dict[str, Any]:
    totals = (bill.get("statement") or bill).get("totals") or [{}]
    first = totals[0]
    return {
        "consumer": bill.get("consumer") or first.get("consumer"),
        "jobs": int(first.get("jobs") or 0),
        "amount": str(first.get("amount") or "0"),
        "currency": str(first.get("currency") or ""),
    }


def context_or_null(progress: Progress | None) -> Any:
    return progress if progress is not None else nullcontext()
