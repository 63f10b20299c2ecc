"""Vertical federated linear regression on additive secret shares (``vlinreg``).

The same parties, roles, dealer and messages as vertical logistic regression
(:mod:`dataspace.federated.vlr`: SecureML-style, Beaver triples from a dealer, owned-matrix
products); only the loss differs. Objective: mean squared error / 2 + ``l2``/2 · ||w||² (the
intercept is not penalised), minimised by mini-batch SGD. The gradient of the squared loss is
linear in the scores, so the residual is ``r = z − y`` — no sigmoid approximation, no extra
Beaver multiplication per iteration; everything else per iteration is vlr's.

The target is continuous (e.g. door-to-door transit hours). The label party standardises it
**at home** with the mean and standard deviation of its own training rows; the protocol works
on the standardised target, and those two numbers stay with the label party's model part
(:class:`Target`). Who learns what is exactly vlr's (docs/vfl.md): per epoch the validation
mean squared error (of the standardised target: one number) is opened to the two computing
parties; at the end each weight block is opened to its owner, the intercept and the target
scaling to the label party. Prediction (:func:`predict`) is vlr's: partial scores summed on
shares, the total opened to the label party only, which maps it back to the target's units.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from dataspace.federated import vlr
from dataspace.federated.baseline import prepare, train_plain
from dataspace.federated.errors import InvalidTrainingInput
from dataspace.federated.mpc import Opening
from dataspace.federated.mpc.engine import Shared
from dataspace.federated.plan import Scaler, TrainConfig, make_plan

Floats = npt.NDArray[np.float64]

# SGD on the squared loss diverges when the step exceeds 2 / (largest eigenvalue of the
# standardised design's covariance); with correlated columns that eigenvalue is a few units.
DEFAULT_CONFIG = TrainConfig(epochs=20, batch_size=256, learning_rate=0.1, lr_decay=0.1)


@dataclass(frozen=True)
class Target:
    """The label party's standardisation of the target (its own training rows)."""

    mean: float
    scale: float

    @classmethod
    def fit(cls, values: Floats) -> Target:
        sd = float(np.std(values))
        return cls(float(np.mean(values)), sd if sd > 0 else 1.0)

    def transform(self, values: Floats) -> Floats:
        return (np.asarray(values, dtype=np.float64) - self.mean) / self.scale

    def inverse(self, scores: Floats) -> Floats:
        return np.asarray(scores, dtype=np.float64) * self.scale + self.mean


@dataclass(frozen=True)
class LinearPartyModel(vlr.PartyModel):
    """A party's part of a vertical linear regression: vlr's part plus, at the label party
    only, the target scaling (``partial_score`` is in standardised target units)."""

    target: Target | None = None


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    learning_rate: float
    validation_mse: float  # of the standardised target
    seconds: float


@dataclass
class LinregResult:
    """What a training job produced. ``models[p]`` is held by party ``p`` alone."""

    models: dict[str, LinearPartyModel]
    label_party: str
    compute_parties: tuple[str, str]
    dealer: str
    epochs_run: int
    iterations: int
    best_epoch: int
    validation: list[EpochRecord]
    seconds: float
    dealer_seconds: float
    bytes_by_link: dict[str, int]
    openings: list[Opening]
    masked_openings: int
    config: TrainConfig = field(default_factory=lambda: DEFAULT_CONFIG)

    @property
    def bytes_total(self) -> int:
        return sum(self.bytes_by_link.values())

    @property
    def target(self) -> Target:
        t = self.models[self.label_party].target
        assert t is not None
        return t


@dataclass(frozen=True)
class LinearPrediction:
    """Predictions in the target's units (``values``), opened to the label party only."""

    values: Floats
    scores: Floats  # the opened total, standardised target units
    to: str
    openings: list[Opening]


class _Session(vlr._Session):
    """vlr's session with the squared-loss residual ``z − y`` (no sigmoid: the scores are
    truncated exactly, one opening, and the label party subtracts its targets); its
    validation loss is then the MSE of the standardised target."""

    VALIDATION_LOSS = "validation squared error"

    def deal_residual(self, size: int) -> tuple[str, ...]:
        return (self.mpc.deal_trunc((size,), self.fp.data_frac_bits),)

    def residual(
        self, z: Shared, labels_key: str, rows: slice | None,
        tids: tuple[str, ...] | None = None,
    ) -> Shared:
        owner = self.mpc.parties[0]  # the label party
        labels = owner.mem[labels_key]
        scores = self.mpc.trunc_exact(z, self.fp.data_frac_bits, tids[0] if tids else None)
        r = self.mpc.sub_own(scores, owner, labels[rows] if rows is not None else labels)
        self.mpc.free(scores)
        return r


def _label_party(parties: Sequence[vlr.PartyData]) -> vlr.PartyData:
    labelled = [p for p in parties if p.labels is not None]
    if len(labelled) != 1:
        raise InvalidTrainingInput(
            f"exactly one party must hold the targets, found {len(labelled)}",
            hint="pass labels only with the label party's PartyData",
        )
    label = labelled[0]
    assert label.labels is not None
    y = np.asarray(label.labels, dtype=np.float64)
    if y.ndim != 1 or y.shape[0] != label.features.shape[0]:
        raise InvalidTrainingInput("the targets must be one value per aligned row")
    if not np.isfinite(y).all():
        raise InvalidTrainingInput("the targets have missing or infinite values")
    return label


def train(
    parties: Sequence[vlr.PartyData],
    config: TrainConfig | None = None,
    *,
    decide: Callable[[float], tuple[float, bool, bool]] | None = None,
) -> LinregResult:
    """Train vertical linear regression; see the module docstring for who learns what.

    ``decide``: as :func:`vlr.train`'s, on the validation squared error (across nodes: the
    label party's early-stopping decisions, followed by every node; services/train_roles.py).
    """
    config = config or DEFAULT_CONFIG
    started = time.perf_counter()
    label = _label_party(parties)
    assert label.labels is not None
    y = np.asarray(label.labels, dtype=np.float64)
    plan = make_plan(y.shape[0], config)
    target = Target.fit(y[plan.train])
    # vlr's session checks for 0/1 labels and loads them; it gets a placeholder of zeros and
    # the label party's memory then receives the standardised targets instead.
    stand_in = [replace(p, labels=np.zeros_like(y)) if p is label else p for p in parties]
    session = _Session(stand_in, config)
    owner = session.nodes[label.name]
    owner.mem["y/train"] = session.fp.encode(target.transform(y[plan.train]))
    owner.mem["y/val"] = session.fp.encode(target.transform(y[plan.validation]))
    fitted = vlr.fit(session, config, decide)
    curve = [EpochRecord(*point) for point in fitted.curve]

    def part(party: str, weights: Floats, intercept: float | None) -> LinearPartyModel:
        scaling = target if party == session.label else None
        return LinearPartyModel(
            party, session.columns[party], weights, session.scalers[party], intercept, scaling
        )

    return LinregResult(
        models=vlr.release(session, fitted, part),
        validation=curve,
        **vlr.run_facts(session, fitted, started, config),
    )


def predict(
    models: Mapping[str, vlr.PartyModel],
    features: Mapping[str, Floats],
    *,
    label_party: str,
    frac_bits: int = 16,
) -> LinearPrediction:
    """Predict new aligned rows: vlr's joint scoring (each party ``X_p w_p`` at home, summed
    on shares, the total opened to the label party only), then the label party maps the
    total back to the target's units with its own :class:`Target`."""
    target = getattr(models.get(label_party), "target", None)
    if not isinstance(target, Target):
        raise InvalidTrainingInput(
            f"the model part of {label_party} carries no target scaling",
            hint="predict with the parts vlinreg.train returned (LinearPartyModel)",
        )
    out = vlr.predict(models, features, label_party=label_party, frac_bits=frac_bits)
    return LinearPrediction(target.inverse(out.scores), out.scores, out.to, out.openings)


# --- the plaintext reference -------------------------------------------------------------


@dataclass(frozen=True)
class PlainModel:
    """Linear regression on pooled columns in the clear (the parity reference, and what a
    label party trains at home on its own columns)."""

    weights: Floats
    intercept: float
    scalers: list[Scaler]
    target: Target
    validation: list[float]

    def predict(self, blocks: Sequence[Floats]) -> Floats:
        x = np.hstack([s.transform(b) for s, b in zip(self.scalers, blocks, strict=True)])
        return self.target.inverse(x @ self.weights + self.intercept)


def _identity(z: Floats) -> Floats:
    return z


def train_plain_linear(
    blocks: Sequence[Floats], labels: Floats, config: TrainConfig | None = None
) -> PlainModel:
    """Exactly :func:`train`'s schedule (split, batches, order, steps, L2, early stopping,
    target standardisation) in float64 on the pooled columns."""
    config = config or DEFAULT_CONFIG
    y = np.asarray(labels, dtype=np.float64)
    plan = make_plan(y.shape[0], config)
    target = Target.fit(y[plan.train])
    chosen = [np.asarray(b, dtype=np.float64) for b in blocks]
    w, b, curve = train_plain(chosen, target.transform(y), config, link=_identity)
    _, scalers = prepare(chosen, plan, config.clip)
    return PlainModel(w, b, scalers, target, curve)
