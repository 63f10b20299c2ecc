"""Small numpy models for horizontal FL: parameters are one flat float64 vector.

* ``logistic`` — binary logistic regression (log-loss);
* ``linear`` — linear regression (half mean squared error);
* ``mlp`` — one hidden layer (tanh), sigmoid output, log-loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dataspace.errors import UsageError

Floats = npt.NDArray[np.float64]


def _sigmoid(z: Floats) -> Floats:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=np.float64)


@dataclass(frozen=True)
class Model:
    kind: str
    dim: int
    hidden: int = 8

    def __post_init__(self) -> None:
        if self.kind not in ("logistic", "linear", "mlp"):
            raise UsageError(f"unknown model {self.kind!r}", hint="use logistic | linear | mlp")

    @property
    def size(self) -> int:
        if self.kind == "mlp":
            return self.dim * self.hidden + 2 * self.hidden + 1
        return self.dim + 1

    def init(self, seed: int = 0) -> Floats:
        if self.kind != "mlp":
            return np.zeros(self.size)
        rng = np.random.default_rng(seed)
        theta = np.zeros(self.size)
        d, k = self.dim, self.hidden
        theta[: d * k] = rng.normal(0.0, 1.0 / np.sqrt(d), d * k)
        theta[d * k + k : d * k + 2 * k] = rng.normal(0.0, 1.0 / np.sqrt(k), k)
        return theta

    def _split(self, theta: Floats) -> tuple[Floats, Floats, Floats, float]:
        d, k = self.dim, self.hidden
        return (
            theta[: d * k].reshape(d, k),
            theta[d * k : d * k + k],
            theta[d * k + k : d * k + 2 * k],
            float(theta[-1]),
        )

    def output(self, theta: Floats, x: Floats) -> Floats:
        """Probabilities (logistic, mlp) or predictions (linear)."""
        if self.kind == "mlp":
            w1, b1, w2, b2 = self._split(theta)
            return _sigmoid(np.tanh(x @ w1 + b1) @ w2 + b2)
        z: Floats = np.asarray(x @ theta[:-1] + theta[-1], dtype=np.float64)
        return z if self.kind == "linear" else _sigmoid(z)

    def loss(self, theta: Floats, x: Floats, y: Floats) -> float:
        out = self.output(theta, x)
        if self.kind == "linear":
            return float(0.5 * np.mean((out - y) ** 2))
        p = np.clip(out, 1e-12, 1 - 1e-12)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))

    def grad(self, theta: Floats, x: Floats, y: Floats) -> Floats:
        n = y.shape[0]
        if self.kind != "mlp":
            r = self.output(theta, x) - y
            return np.asarray(np.r_[x.T @ r / n, r.mean()], dtype=np.float64)
        w1, b1, w2, b2 = self._split(theta)
        a = np.tanh(x @ w1 + b1)
        r = (_sigmoid(a @ w2 + b2) - y) / n
        da = np.outer(r, w2) * (1 - a**2)
        return np.asarray(np.r_[(x.T @ da).ravel(), da.sum(0), a.T @ r, r.sum()], dtype=np.float64)
