"""The secure-aggregation strategies, chosen by name."""

from __future__ import annotations

from dataspace.errors import UsageError
from dataspace.privacy.secagg.additive import AdditiveSharing
from dataspace.privacy.secagg.base import Aggregator
from dataspace.privacy.secagg.noise import OutputNoise, with_noise
from dataspace.privacy.secagg.protocol import PairwiseMasking

__all__ = ["AGGREGATORS", "aggregator"]

AGGREGATORS: dict[str, Aggregator] = {
    PairwiseMasking.name: PairwiseMasking(),
    AdditiveSharing.name: AdditiveSharing(),
}


def aggregator(name: str, noise: OutputNoise | None = None) -> Aggregator:
    """The strategy called ``name`` (``pairwise-masking`` | ``additive``), DP-wrapped if asked."""
    try:
        strategy = AGGREGATORS[name]
    except KeyError:
        raise UsageError(
            f"unknown secure-aggregation strategy {name!r}",
            hint="use " + " | ".join(sorted(AGGREGATORS)),
        ) from None
    return with_noise(strategy, noise) if noise is not None else strategy
