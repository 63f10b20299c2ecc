"""The one place the scenarios call federated training (``dataspace.services.training``).

Until that module exists, :func:`require_training` raises :class:`NeedsTraining` and the
scenarios that need it say so — they never fake a result. When it lands, :func:`train` is the
adapter to wire: it must run the job through the consumer's node (like ``dataspace train
--model vlr|vgbdt|fedavg``) and return the evaluator's scores for the held-out entities.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from dataspace.scenarios.base import NeedsTraining

MODULE = "dataspace.services.training"
MESSAGE = "needs federated training (not available in this build)"


def available() -> bool:
    try:
        return importlib.util.find_spec(MODULE) is not None
    except ModuleNotFoundError:
        return False


def require_training() -> None:
    if not available():
        raise NeedsTraining(MESSAGE, hint="`dataspace train` lands with services/training.py")


def train(ctx: Any, *, model: str, agreements: list[str], dataset: str, label: str,
          features: list[str]) -> dict[str, Any]:
    """Run one federated training job from the consumer's node; returns the job's view."""
    require_training()
    training = importlib.import_module(MODULE)
    entry = getattr(training, "run_training", None)
    if entry is None:
        raise NeedsTraining(
            MESSAGE + ": services.training has no run_training entry point yet",
            hint="wire dataspace.scenarios.training.train to the training service",
        )
    result: dict[str, Any] = entry(
        ctx.roots[ctx.scenario.consumer()], model=model, agreements=agreements,
        dataset=dataset, label=label, features=features,
    )
    return result
