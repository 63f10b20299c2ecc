"""VFL logistic regression on secret shares vs plaintext LR on the same machine.

    .venv/bin/python bench/vfl.py [--rows 100000] [--epochs 10] [--batch-size 4096]

Two parties (bank with labels: 10 columns, tax bureau: 10 columns) and a dealer, all in
this process and on one core's worth of numpy; prints training time of the VFL job against
plaintext numpy SGD (identical schedule) and scikit-learn's LogisticRegression (lbfgs, if
installed), the ratios, held-out AUCs and the bytes the protocol sent.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dataspace.federated import PartyData, TrainConfig, auc, make_vertical, predict, train
from dataspace.federated.baseline import prepare, train_plain
from dataspace.federated.plan import make_plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3, help="best of N timings")
    args = parser.parse_args()

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
