"""VFL logistic regression on secret shares vs plaintext LR on the same machine.

    .venv/bin/python bench/vfl.py [--rows 100000] [--epochs 10] [--batch-size 4096]
    .venv/bin/python bench/vfl.py --model vgbdt [--rows 100000] [--trees 50] [--depth 3]

``--model vgbdt``: SecureBoost-style GBDT on additive shares (bank 10 columns with labels,
tax bureau 10 columns, operator as dealer) against the same algorithm in plaintext numpy and
LightGBM / XGBoost with matched parameters (if installed), with ratios and held-out AUCs.

Two parties (bank with labels: 10 columns, tax bureau: 10 columns) and a dealer, all in
this process and on one core's worth of numpy; prints training time of the VFL job against
plaintext numpy SGD (identical schedule) and scikit-learn's LogisticRegression (lbfgs, if
installed), the ratios, held-out AUCs and the bytes the protocol sent.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from dataspace.federated import PartyData, TrainConfig, auc, make_vertical, predict, train
from dataspace.federated.baseline import prepare, train_plain
from dataspace.federated.plan import make_plan


def bench_vgbdt(rows: int, trees: int, depth: int, repeat: int) -> None:
    from dataspace.federated.sgb import SecureBoost
    from dataspace.federated.sgb import predict as sgb_predict
    from dataspace.federated.sgb_tree import SgbParams, train_central

    data = make_vertical(int(rows * 1.25), {"bank": 10, "tax": 10}, seed=7)
    blocks = {k: v[:rows] for k, v in data.blocks.items()}
    test = {k: v[rows:] for k, v in data.blocks.items()}
    labels, test_labels = data.labels[:rows], data.labels[rows:]
    params = SgbParams(trees=trees, max_depth=depth, learning_rate=0.3, l2=1.0,
                       min_child_weight=1.0, bins=32)
    parties = [PartyData("bank", blocks["bank"], labels), PartyData("tax", blocks["tax"])]
    x, x_test = np.hstack(list(blocks.values())), np.hstack(list(test.values()))

    def best(fn: Callable[[], object]) -> tuple[float, object]:
        times, out = [], None
        for _ in range(repeat):
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
        return min(times), out

    model_trainer = SecureBoost(params, allow_secureboost_leakage=True)
    vfl, model = best(lambda: model_trainer.fit(parties))
    assert model is not None
    vfl_auc = auc(sgb_predict(model, test), test_labels)  # type: ignore[arg-type]
    print(f"rows {rows}  features 10 + 10  trees {trees}  depth {depth}  bins 32")
    print(f"VFL GBDT (shares)        {vfl:8.3f} s  (dealer {model.dealer_seconds:.3f} s, "  # type: ignore[attr-defined]
          f"{model.bytes_total / 1e6:.0f} MB sent)  AUC {vfl_auc:.4f}")  # type: ignore[attr-defined]
    plain, central = best(lambda: train_central(x, labels, params))
    plain_auc = auc(central.decision_function(x_test), test_labels)  # type: ignore[attr-defined]
    print(f"plaintext numpy GBDT     {plain:8.3f} s  ratio {vfl / plain:5.1f}x  "
          f"AUC {plain_auc:.4f}")
    try:
        import lightgbm as lgb
    except ImportError:
        print("lightgbm not installed: skipping its baseline")
    else:
        for threads in (1, 0):
            lgb_params = {
                "objective": "binary", "learning_rate": params.learning_rate,
                "num_leaves": 2**depth, "max_depth": depth, "lambda_l2": params.l2,
                "min_sum_hessian_in_leaf": params.min_child_weight, "min_data_in_leaf": 1,
                "max_bin": params.bins, "verbose": -1, "num_threads": threads,
            }
            t, booster = best(lambda: lgb.train(lgb_params, lgb.Dataset(x, labels),  # noqa: B023
                                                num_boost_round=trees))
            lgb_auc = auc(booster.predict(x_test, raw_score=True), test_labels)  # type: ignore[attr-defined]
            name = f"LightGBM ({'1 thread' if threads == 1 else 'all cores'})"
            print(f"{name:24s} {t:8.3f} s  ratio {vfl / t:5.1f}x  AUC {lgb_auc:.4f}")
    try:
        import xgboost as xgb
    except ImportError:
        print("xgboost not installed: skipping its baseline")
    else:
        xgb_params = {"objective": "binary:logistic", "eta": params.learning_rate,
                      "max_depth": depth, "lambda": params.l2, "tree_method": "hist",
                      "max_bin": params.bins, "min_child_weight": params.min_child_weight}
        t, xbooster = best(lambda: xgb.train(xgb_params, xgb.DMatrix(x, labels), trees))
        xgb_auc = auc(xbooster.predict(xgb.DMatrix(x_test), output_margin=True),  # type: ignore[attr-defined]
                      test_labels)
        print(f"XGBoost hist             {t:8.3f} s  ratio {vfl / t:5.1f}x  AUC {xgb_auc:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("vlr", "vgbdt"), default="vlr")
    parser.add_argument("--trees", type=int, default=50)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3, help="best of N timings")
    args = parser.parse_args()
    if args.model == "vgbdt":
        bench_vgbdt(args.rows, args.trees, args.depth, args.repeat)
        return

    data = make_vertical(int(args.rows * 1.25), {"bank": 10, "tax": 10}, seed=7)
    n_train = args.rows
    blocks = {k: v[:n_train] for k, v in data.blocks.items()}
    labels, test_labels = data.labels[:n_train], data.labels[n_train:]
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, patience=args.epochs)
    parties = [PartyData("bank", blocks["bank"], labels), PartyData("tax", blocks["tax"])]

    vfl_times, result = [], None
    for _ in range(args.repeat):
        start = time.perf_counter()
        result = train(parties, config)
        vfl_times.append(time.perf_counter() - start)
    assert result is not None
    test = {k: v[n_train:] for k, v in data.blocks.items()}
    vfl_auc = auc(predict(result.models, test, label_party="bank").scores, test_labels)

    plain_times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        w, b, _ = train_plain(list(blocks.values()), labels, config)
        plain_times.append(time.perf_counter() - start)
    plan = make_plan(n_train, config)
    pooled, scalers = prepare(list(blocks.values()), plan, config.clip)
    x_test = np.hstack([s.transform(test[k]) for s, k in zip(scalers, blocks, strict=True)])
    plain_auc = auc(x_test @ w + b, test_labels)

    vfl, plain = min(vfl_times), min(plain_times)
    print(f"rows {n_train}  features 10 + 10  epochs {result.epochs_run}  "
          f"batch {args.batch_size}  iterations {result.iterations}")
    print(f"VFL LR (secret shares)   {vfl:8.3f} s  (dealer {result.dealer_seconds:.3f} s, "
          f"{result.bytes_total / 1e6:.0f} MB sent)  AUC {vfl_auc:.4f}")
    print(f"plaintext numpy SGD      {plain:8.3f} s  ratio {vfl / plain:5.1f}x  "
          f"AUC {plain_auc:.4f}")
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        print("scikit-learn not installed: skipping its baseline")
        return
    sk_times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        pooled, scalers = prepare(list(blocks.values()), plan, config.clip)
        model = LogisticRegression(C=1.0 / (config.l2 * plan.train.size), max_iter=1000)
        model.fit(pooled[plan.train], labels[plan.train])
        sk_times.append(time.perf_counter() - start)
    sk = min(sk_times)
    sk_auc = auc(model.decision_function(x_test), test_labels)
    print(f"scikit-learn lbfgs       {sk:8.3f} s  ratio {vfl / sk:5.1f}x  AUC {sk_auc:.4f}")


if __name__ == "__main__":
    main()
