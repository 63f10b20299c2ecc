"""`dataspace train`, `dataspace model list|show`, and `job watch|retry` for training jobs.

`train` runs the job from this process as the initiator (the label party), with a live
progress bar fed by every node's step events; docs/training.md has the details.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from dataspace.cli import mp
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
from dataspace.errors import UsageError

if TYPE_CHECKING:
    from dataspace.services import models as model_store
    from dataspace.services import predict, training
else:
    model_store = lazy_module("dataspace.services.models")
    predict = lazy_module("dataspace.services.predict")
    training = lazy_module("dataspace.services.training")


app = typer.Typer(
    help="Trained federated models: who holds which part, metrics, contribution.",
    no_args_is_help=True,
)


def train(
    ctx: typer.Context,
    agreement: list[str] = typer.Option(
        ..., "--agreement", help="Agreement with a provider (repeat)."
    ),
    with_: list[str] = typer.Option(None, "--with", help="The provider of each --agreement."),
    model: str = typer.Option("vlr", "--model", help="vlr | vgbdt | fedavg | vlinreg"),
    label: str = typer.Option(
        ..., "--label", help="The label column (fedavg: one name or 'PARTY:col ...')."
    ),
    features: list[str] = typer.Option(
        ..., "--features", help="PARTY:col1,col2 per party (repeat, or space-separated)."
    ),
    align: list[str] = typer.Option(None, "--align", help="PSI align job per provider."),
    on: str = typer.Option(
        None, "--on", help="Align first on this key (e.g. credit_code:uscc), under the training "
        "agreements: they must permit psi too; else run `psi --reveal align` and pass --align."
    ),
    peer_key: list[str] = typer.Option(
        None, "--peer-key", help="PEER=COLUMN(S): with --on, the key as that provider names "
        "it (kinds as --on's unless given; repeat per provider)."
    ),
    dataset: str = typer.Option(
        None, "--dataset", help="Your dataset (with --on; fedavg: your own rows)."
    ),
    params: str = typer.Option(
        "{}", "--params", help='Hyper-parameters as JSON, e.g. {"epochs": 8}.'
    ),
    holdout: float = typer.Option(0.25, "--holdout", help="Held-out fraction for evaluation."),
    seed: int = typer.Option(
        0,
        "--seed",
        help="Seed of the held-out and validation splits and the SGD batches (recorded with "
        "the model; never of masks or triples).",
    ),
    patience: int = typer.Option(
        None,
        "--patience",
        help="vlr, vlinreg: stop after this many epochs without validation improvement; "
        "keep the best.",
    ),
    validation: float = typer.Option(
        None, "--validation", help="vlr, vlinreg: fraction of the training rows validated on (0.2)."
    ),
    no_contribution: bool = typer.Option(False, "--no-contribution", help="Skip Shapley."),
    revenue_pool: str = typer.Option(
        None,
        "--revenue-pool",
        help="vertical models: an amount, e.g. '3000.00 CNY', split among the providers by "
        "their Shapley values; offers with contribution_share charge their part.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Train a model across nodes under your agreements: vlr, vgbdt or fedavg.

    Vertical logistic regression, SecureBoost GBDT, or horizontal FedAvg."""
    n = node(ctx)
    view = mp._run_with_bar(
        f"train {model}",
        lambda progress: training.run_train(
            n,
            agreements=agreement,
            peers=with_ or None,
            model=model,
            label=label,
            features=training.parse_features(features),
            align=align or (),
            on=on,
            peer_keys=mp._peer_keys(peer_key or [], with_ or []) or None,
            dataset=dataset,
            params=_params(params),
            holdout=holdout,
            seed=seed,
            patience=patience,
            validation=validation,
            contribution=not no_contribution,
            revenue_pool=revenue_pool,
            actor=actor(),
            progress=progress,
        ),
        as_json,
    )
    if as_json:
        print_json(view)
        return
    console.print(f"model {view['id']}: {view['state']}")
    _print_model(model_store.get_model(n, view["id"]))


def _params(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--params is not JSON ({exc})", hint='e.g. {"epochs": 8}') from None
    if not isinstance(value, dict):
        raise UsageError("--params must be a JSON object", hint='e.g. {"epochs": 8}')
    return value


def predict_(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", help="A vertical model you trained (vlr, vgbdt)."),
    rows: list[str] = typer.Option(
        ..., "--rows", help="PSI align job over the new rows (repeat: one per provider)."
    ),
    out: str = typer.Option(
        None, "--out", help="Write the scores here (parquet; default under the data dir)."
    ),
    force: bool = ForceOption,
    as_json: bool = JsonOption,
) -> None:
    """Score new aligned rows with a trained vertical model.

    vlr: each party scores its own columns at home, only the summed score is revealed, to you.
    vgbdt: you walk the trees, each split's owner answers left/right for the rows reaching it
    (docs/sgb.md)."""
    check_out(Path(out) if out else None, (".parquet",), force=force)
    view = predict.run_predict(node(ctx), model=model, rows=rows, out=out, actor=actor())
    if as_json:
        print_json(view)
        return
    result = view["result"] or {}
    console.print(
        f"prediction {view['id']}: {view['state']} — {result.get('rows')} rows scored with "
        f"model {escape(model)} in {result.get('seconds')} s → "
        f"{escape(str(result.get('scores_file')))}"
    )


def _print_model(m: dict[str, Any]) -> None:
    console.print(f"[bold]model {escape(m['id'])}[/bold] — {m['family']}, {m['state']}")
    rows = [[name, p.get("holds"), (p.get("sha256") or "")[:16]] for name, p in m["parts"].items()]
    console.print(table("who holds which part", ["node", "holds", "sha256"], rows))
    metrics = m["metrics"]
    if m["family"] == "fedavg":
        _print_fedavg(metrics)
        return
    _print_training(m["params"], metrics)
    regression = m["family"] == "vlinreg"
    if regression:
        _print_regression(metrics)
    else:
        rows = [[k, f"{float(v):.4f}"] for k, v in (metrics.get("auc_by_coalition") or {}).items()]
        console.print(
            table(f"held-out AUC ({metrics.get('held_out_rows')} rows)", ["coalition", "auc"], rows)
        )
    contribution = m["contribution"] or {}
    if contribution:
        rows = [[k, f"{float(v):+.4f}"] for k, v in contribution["values"].items()]
        what = "MAE reduction" if regression else "AUC"
        console.print(
            table(
                f"contribution ({contribution['method']} Shapley, {what})",
                ["provider", "value"],
                rows,
            )
        )
    revenue = contribution.get("revenue")
    if revenue:
        rows = [[k, f"{v} {revenue['currency']}"] for k, v in revenue["shares"].items()]
        console.print(table(f"revenue pool {revenue['pool']} by contribution",
                            ["provider", "share"], rows))


def _print_regression(metrics: dict[str, Any]) -> None:
    mae, rmse, r2 = (metrics.get(f"{k}_by_coalition") or {} for k in ("mae", "rmse", "r2"))
    rows = [[k, f"{float(v):.4f}", f"{float(rmse[k]):.4f}", f"{float(r2[k]):.4f}"]
            for k, v in mae.items()]
    console.print(
        table(
            f"held-out error ({metrics.get('held_out_rows')} rows, target units)",
            ["coalition", "mae", "rmse", "r2"],
            rows,
        )
    )


def _print_training(params: dict[str, Any], metrics: dict[str, Any]) -> None:
    seed = params.get("seed", metrics.get("seed"))
    line = f"seed {seed}, {metrics.get('train_rows')} training rows"
    stopping = metrics.get("stopping") or {}
    if stopping:
        best = metrics.get("best_epoch")
        line += (
            f"; epochs run {metrics.get('epochs_run')}, kept epoch "
            f"{'' if best is None else int(best) + 1} ({stopping.get('kept')}); "
            f"stopped: {stopping.get('reason')}"
        )
        if stopping.get("early_stopping"):
            line += (
                f" (patience {stopping.get('patience')}, min_delta {stopping.get('min_delta')}, "
                f"{metrics.get('validation_rows')} validation rows)"
            )
    console.print(escape(line))


def _print_fedavg(metrics: dict[str, Any]) -> None:
    def fmt(v: Any) -> str:
        return "" if v is None else f"{float(v):.4f}"

    rows = [
        [name, fmt(v.get("auc")), fmt(v.get("auc_local")), fmt(v.get("loss")), v.get("test_rows")]
        for name, v in (metrics.get("per_node") or {}).items()
    ]
    o = metrics.get("overall") or {}
    rows.append(["overall", fmt(o.get("auc")), "", fmt(o.get("loss")), o.get("test_rows")])
    console.print(
        table(
            "held-out metrics per node (federated vs. trained alone)",
            ["node", "auc", "auc alone", "loss", "rows"],
            rows,
        )
    )
    dp = metrics.get("dp")
    if dp:
        console.print(f"DP-FedAvg: ε = {float(dp['epsilon']):.3f} at δ = {dp['delta']}")


@app.command("show")
def show(ctx: typer.Context, model_id: str, as_json: bool = JsonOption) -> None:
    """Metrics, contribution and which node holds which part of a trained model."""
    m = model_store.get_model(node(ctx), model_id)
    if as_json:
        print_json(m)
    else:
        _print_model(m)


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Trained models this node holds a part of."""
    items = model_store.list_models(node(ctx))
    if as_json:
        print_json(items)
        return
    rows = [
        [m["id"], m["family"], m["role"], m["initiator"], _headline(m["metrics"])] for m in items
    ]
    console.print(table("models", ["id", "family", "role", "initiator", "auc / mae"], rows))


def _headline(metrics: dict[str, Any]) -> Any:
    """The list's one metric: AUC, or the MAE of a regression (vlinreg)."""
    if metrics.get("mae") is not None:
        return f"mae {metrics['mae']:.4g}"
    return f"{metrics['auc']:.4f}" if isinstance(metrics.get("auc"), float | int) else None


def retry(ctx: typer.Context, job_id: str, as_json: bool = JsonOption) -> None:
    """Start a failed multi-party or training job again (new job id, fresh secrets)."""
    n = node(ctx)
    if not training.is_training_job(n, job_id):
        mp.retry(ctx, job_id, as_json)
        return
    view = mp._run_with_bar(
        "retry",
        lambda progress: training.retry(n, job_id, actor=actor(), progress=progress),
        as_json,
    )
    if as_json:
        print_json(view)
    else:
        console.print(
            f"job {view['id']} (attempt {view['attempt']}, retry of {job_id}): {view['state']}"
        )


def watch(
    ctx: typer.Context,
    job_id: str,
    interval: float = typer.Option(0.5, "--interval", help="Seconds between polls."),
    timeout: float = typer.Option(3600, "--timeout", help="Give up after this many seconds."),
) -> None:
    """Follow a multi-party or training job: a live progress bar fed by every node's steps."""
    n = node(ctx)
    mp.follow(n, job_id, interval, timeout,
              training.get_job if training.is_training_job(n, job_id) else None)


def register(root: typer.Typer, job_app: typer.Typer) -> None:
    root.command("train")(train)
    root.command("predict")(predict_)
    root.add_typer(app, name="model")
    job_app.registered_commands = [
        c for c in job_app.registered_commands if c.name not in ("retry", "watch")
    ]
    job_app.command("retry")(retry)
    job_app.command("watch")(watch)
