"""VFL logistic regression and SecureBoost GBDT on secret shares vs plaintext, same machine.

    .venv/bin/python bench/vfl.py [--rows 100000] [--epochs 10] [--batch-size 4096]
    .venv/bin/python bench/vfl.py --model vgbdt [--rows 100000] [--trees 50] [--depth 3]

Two parties (bank with labels: 10 columns, tax bureau: 10 columns) and the operator as dealer,
all in this process on one core's worth of numpy (every message is still encoded to and
decoded from its wire bytes). The single-core contenders run in turn, ``--repeat`` rounds, so
that a load change on this shared machine hits all of them alike; the multi-threaded ones
(BLAS with its default threads, scikit-learn, LightGBM on all cores) run afterwards, in a race
of their own, because their idle threads keep spinning for a while after each call and would
slow down whichever contender runs next. Each line shows the median and the best time; ratios
are median over median. The load average is printed before and after.

``vlr``: against plaintext numpy SGD with the identical schedule (``baseline.train_plain``)
with OpenBLAS on one thread and on its default threads, and scikit-learn's
``LogisticRegression`` (lbfgs, same L2). ``vgbdt``: against the
same algorithm in plaintext numpy and LightGBM with matched parameters (trees, depth, bins,
learning rate, L2; one thread, and all cores; dataset construction included, as our binning
is).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np

from dataspace.federated import PartyData, TrainConfig, auc, make_vertical, predict, train
from dataspace.federated.baseline import prepare, train_plain
from dataspace.federated.plan import make_plan


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def race(contenders: dict[str, Callable[[], Any]], repeat: int) -> dict[str, list[float]]:
    """Run each contender once per round, in turn; returns every time per contender."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def line(name: str, times: list[float], ref: list[float] | None, extra: str = "") -> str:
    med = statistics.median(times)
    ratio = f"  VFL is {statistics.median(ref) / med:5.1f}x" if ref is not None else ""
    return f"{name:34s} median {med:7.3f} s  best {min(times):7.3f} s{ratio}  {extra}"


def blas_threads(n: int) -> Any:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def bench_vgbdt(rows: int, trees: int, depth: int, repeat: int) -> None:
    from dataspace.federated.sgb import SecureBoost, SgbModel
    from dataspace.federated.sgb import predict as sgb_predict
    from dataspace.federated.sgb_tree import CentralModel, SgbParams, train_central

    data = make_vertical(int(rows * 1.25), {"bank": 10, "tax": 10}, seed=7)
    blocks = {k: v[:rows] for k, v in data.blocks.items()}
    test = {k: v[rows:] for k, v in data.blocks.items()}
    labels, test_labels = data.labels[:rows], data.labels[rows:]
    params = SgbParams(trees=trees, max_depth=depth, learning_rate=0.3, l2=1.0,
                       min_child_weight=1.0, bins=32)
    parties = [PartyData("bank", blocks["bank"], labels), PartyData("tax", blocks["tax"])]
    x, x_test = np.hstack(list(blocks.values())), np.hstack(list(test.values()))
    trainer = SecureBoost(params, allow_secureboost_leakage=True)
    out: dict[str, Any] = {}

    def keep(name: str, fn: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            out[name] = fn()
        return run

    contenders = {"vfl": keep("vfl", lambda: trainer.fit(parties)),
                  "numpy": keep("numpy", lambda: train_central(x, labels, params))}
    threaded: dict[str, Callable[[], None]] = {}
    try:
        import lightgbm as lgb
    except ImportError:
        have_lgb = False
    else:
        have_lgb = True
        for threads in (1, 0):
            lgb_params = {
                "objective": "binary", "learning_rate": params.learning_rate,
                "num_leaves": 2**depth, "max_depth": depth, "lambda_l2": params.l2,
                "min_sum_hessian_in_leaf": params.min_child_weight, "min_data_in_leaf": 1,
                "max_bin": params.bins, "verbose": -1, "num_threads": threads,
            }
            name = f"lgb{threads}"
            (contenders if threads == 1 else threaded)[name] = keep(
                name, lambda p=lgb_params: lgb.train(  # type: ignore[misc]
                    p, lgb.Dataset(x, labels), num_boost_round=trees))
    print(f"rows {rows}  features 10 + 10  trees {trees}  depth {depth}  bins 32  "
          f"rounds {repeat}  cores {os.cpu_count()}  load before {load()}")
    with blas_threads(1):
        times = race(contenders, repeat)
    times |= race(threaded, repeat)
    model: SgbModel = out["vfl"]
    vfl = times["vfl"]
    print(line("VFL GBDT (shares, 1 core)", vfl, None,
               f"AUC {auc(sgb_predict(model, test), test_labels):.4f}  "
               f"(dealer {model.dealer_seconds:.2f} s, {model.bytes_total / 1e6:.0f} MB sent)"))
    central: CentralModel = out["numpy"]
    print(line("plaintext numpy GBDT (same algo)", times["numpy"], vfl,
               f"AUC {auc(central.decision_function(x_test), test_labels):.4f}"))
    if not have_lgb:
        print("lightgbm not installed: skipping its baseline")
    for threads, label in ((1, "1 thread"), (0, "all cores")):
        if f"lgb{threads}" in times:
            booster = out[f"lgb{threads}"]
            score = auc(booster.predict(x_test, raw_score=True), test_labels)
            print(line(f"LightGBM {lgb.__version__} ({label})", times[f"lgb{threads}"], vfl,
                       f"AUC {score:.4f}"))
    print(f"load after {load()}")


def bench_vlr(rows: int, epochs: int, batch_size: int, repeat: int) -> None:
    data = make_vertical(int(rows * 1.25), {"bank": 10, "tax": 10}, seed=7)
    blocks = {k: v[:rows] for k, v in data.blocks.items()}
    test = {k: v[rows:] for k, v in data.blocks.items()}
    labels, test_labels = data.labels[:rows], data.labels[rows:]
    config = TrainConfig(epochs=epochs, batch_size=batch_size, patience=epochs)
    parties = [PartyData("bank", blocks["bank"], labels), PartyData("tax", blocks["tax"])]
    plan = make_plan(rows, config)
    out: dict[str, Any] = {}

    def plain() -> None:
        out["plain"] = train_plain(list(blocks.values()), labels, config)

    def vfl() -> None:
        out["vfl"] = train(parties, config)

    contenders: dict[str, Callable[[], None]] = {"vfl": vfl, "plain1": plain}
    threaded: dict[str, Callable[[], None]] = {"plain": plain}
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        pass
    else:
        def sklearn() -> None:
            pooled, _ = prepare(list(blocks.values()), plan, config.clip)
            model = LogisticRegression(C=1.0 / (config.l2 * plan.train.size), max_iter=1000)
            out["sklearn"] = model.fit(pooled[plan.train], labels[plan.train])
        threaded["sklearn"] = sklearn
    print(f"rows {rows}  features 10 + 10  epochs {epochs}  batch {batch_size}  "
          f"rounds {repeat}  cores {os.cpu_count()}  load before {load()}")
    with blas_threads(1):  # one core each: OpenBLAS limited to one thread
        times = race(contenders, repeat)
    times |= race(threaded, repeat)
    result = out["vfl"]
    vfl_auc = auc(predict(result.models, test, label_party="bank").scores, test_labels)
    print(line("VFL LR (secret shares, 1 core)", times["vfl"], None,
               f"AUC {vfl_auc:.4f}  (iterations {result.iterations}, dealer "
               f"{result.dealer_seconds:.3f} s, {result.bytes_total / 1e6:.0f} MB sent)"))
    w, b, _ = out["plain"]
    _, scalers = prepare(list(blocks.values()), plan, config.clip)
    x_test = np.hstack([s.transform(test[k]) for s, k in zip(scalers, blocks, strict=True)])
    plain_auc = auc(x_test @ w + b, test_labels)
    print(line("numpy SGD, same schedule, BLAS 1T", times["plain1"], times["vfl"],
               f"AUC {plain_auc:.4f} (baseline.train_plain)"))
    print(line("numpy SGD, same schedule, BLAS dflt", times["plain"], times["vfl"],
               f"AUC {plain_auc:.4f}"))
    if "sklearn" in out:
        sk_auc = auc(out["sklearn"].decision_function(x_test), test_labels)
        print(line("scikit-learn lbfgs", times["sklearn"], times["vfl"], f"AUC {sk_auc:.4f}"))
    else:
        print("scikit-learn not installed: skipping its baseline")
    print(f"load after {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", choices=("vlr", "vgbdt"), default="vlr")
    parser.add_argument("--trees", type=int, default=50)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=5, help="rounds (median and best)")
    args = parser.parse_args()
    if args.model == "vgbdt":
        bench_vgbdt(args.rows, args.trees, args.depth, args.repeat)
    else:
        bench_vlr(args.rows, args.epochs, args.batch_size, args.repeat)


if __name__ == "__main__":
    main()
