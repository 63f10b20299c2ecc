"""What every party of a VFL job agrees on in public, and what each does alone to its columns.

* :class:`TrainConfig` — the hyper-parameters, part of the job description.
* :func:`make_plan` — the train/validation split and the fixed mini-batches, drawn from a
  public seed (row positions only: rows are already aligned by PSI, so positions reveal
  nothing about anyone's values). Batches stay the same across epochs (their order is
  reshuffled), which lets the feature masks be reused (SecureML §4.2).
* :class:`Scaler` — each party standardises and clips *its own* columns with statistics of its
  own training rows; the statistics never leave the party and stay with its model block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dataspace.federated.errors import InvalidTrainingInput

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


#: fractional bits of a feature-times-weight product; the update adds 30 for the step size and
#: must stay below 2^62 in the ring (vlr.UPDATE_COEFFICIENT_BITS)
MAX_PRODUCT_BITS = 28


@dataclass(frozen=True)
class TrainConfig:
    """Mini-batch SGD for L2-regularised logistic regression.

    Objective: mean log-loss + ``l2``/2 · ||w||² (the intercept is not penalised). The step
    at epoch ``e`` (from 0) is ``learning_rate / (1 + lr_decay * e)``. Training stops after
    ``epochs`` or when the validation Brier score has not improved by ``min_delta`` for
    ``patience`` epochs; the best epoch's weights are kept.
    """

    epochs: int = 20
    batch_size: int = 1024
    learning_rate: float = 0.5
    lr_decay: float = 0.2
    l2: float = 1e-3
    validation_fraction: float = 0.2
    patience: int = 3
    min_delta: float = 1e-4
    clip: float = 8.0
    frac_bits: int = 16
    data_frac_bits: int = 10
    seed: int = 0
    dealer: str = "operator"
    helper: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            problems.append("epochs, batch_size and patience must be at least 1")
        if not 0.0 < self.validation_fraction < 0.9:
            problems.append("validation_fraction must be in (0, 0.9)")
        if self.learning_rate <= 0 or self.l2 < 0 or self.lr_decay < 0:
            problems.append("learning_rate must be positive, l2 and lr_decay non-negative")
        if not 8 <= self.frac_bits <= 24 or not 4 <= self.data_frac_bits <= 16:
            problems.append("frac_bits must be in [8, 24] and data_frac_bits in [4, 16]")
        elif self.frac_bits + self.data_frac_bits > MAX_PRODUCT_BITS:
            problems.append(
                f"frac_bits + data_frac_bits must be at most {MAX_PRODUCT_BITS} (the shared "
                "computation keeps 30 bits for the step size on top of a feature product's)"
            )
        if not 1.0 <= self.clip <= 16.0:
            problems.append("clip must be in [1, 16] standard deviations")
        if problems:
            raise InvalidTrainingInput("bad training configuration: " + "; ".join(problems))

    def step(self, epoch: int) -> float:
        return self.learning_rate / (1.0 + self.lr_decay * epoch)


@dataclass(frozen=True)
class Plan:
    train: Ints
    validation: Ints
    batches: tuple[slice, ...]

    def batch_order(self, epoch: int, seed: int) -> Ints:
        return np.random.default_rng([seed, 1, epoch]).permutation(len(self.batches))


def make_plan(rows: int, config: TrainConfig) -> Plan:
    n_val = round(rows * config.validation_fraction)
    if rows - n_val < 2 or n_val < 2:
        raise InvalidTrainingInput(f"{rows} rows are too few to train and validate")
    order = np.random.default_rng([config.seed, 0]).permutation(rows)
    train, validation = order[: rows - n_val], order[rows - n_val :]
    size = config.batch_size
    batches = tuple(slice(i, min(i + size, train.size)) for i in range(0, train.size, size))
    return Plan(train.astype(np.int64), validation.astype(np.int64), batches)


@dataclass(frozen=True)
class Scaler:
    mean: Floats
    scale: Floats
    clip: float

    @classmethod
    def fit(cls, features: Floats, clip: float) -> Scaler:
        std = features.std(axis=0)
        return cls(features.mean(axis=0), np.where(std > 0, std, 1.0), clip)

    def transform(self, features: Floats) -> Floats:
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return np.clip(z, -self.clip, self.clip)
