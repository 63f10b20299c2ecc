"""Secure aggregation: sums, means and counts of vectors that no party reveals.

See docs/secure-aggregation.md. Two strategies behind :class:`Aggregator`, chosen by name
(:func:`aggregator`):

* ``pairwise-masking`` — Bonawitz et al. (CCS 2017), semi-honest, with dropout recovery
  through Shamir t-of-n shares (:mod:`.protocol`);
* ``additive`` — n-of-n additive secret sharing, no dropouts (:mod:`.additive`).

Both encode floats as fixed point mod 2^k with overflow checks (:class:`FixedPoint`), speak
only bytes (:mod:`.messages`), and can be wrapped with central DP noise from OpenDP
(:class:`OutputNoise`). :func:`aggregate_locally` runs a whole session in one process.
Key advertisements are signed with the parties' node keys (:func:`ed25519_signer`,
:func:`ed25519_verifier`), so a coordinator cannot substitute keys.
"""

from dataspace.privacy.secagg.additive import AdditiveSharing
from dataspace.privacy.secagg.base import (
    AggregateResult,
    Aggregator,
    CoordinatorRole,
    PartyRole,
    SessionConfig,
    Signer,
    Verifier,
    advertisement,
)
from dataspace.privacy.secagg.encoding import FixedPoint
from dataspace.privacy.secagg.errors import (
    AdvertisementRejected,
    AggregateOverflow,
    NotAParticipant,
    OutOfOrder,
    OverflowRisk,
    SecAggError,
    ShareRejected,
    TooFewSurvivors,
    ValueOutOfBound,
)
from dataspace.privacy.secagg.local import aggregate_locally, run_session
from dataspace.privacy.secagg.noise import LocalNoise, OutputNoise, local_noise, with_noise
from dataspace.privacy.secagg.protocol import PairwiseMasking
from dataspace.privacy.secagg.shamir import Shamir, Share
from dataspace.privacy.secagg.signing import ed25519_signer, ed25519_verifier
from dataspace.privacy.secagg.strategies import AGGREGATORS, aggregator

__all__ = [
    "AGGREGATORS",
    "AdditiveSharing",
    "AdvertisementRejected",
    "AggregateOverflow",
    "AggregateResult",
    "Aggregator",
    "CoordinatorRole",
    "FixedPoint",
    "LocalNoise",
    "NotAParticipant",
    "OutOfOrder",
    "OutputNoise",
    "OverflowRisk",
    "PairwiseMasking",
    "PartyRole",
    "SecAggError",
    "SessionConfig",
    "Shamir",
    "Share",
    "ShareRejected",
    "Signer",
    "TooFewSurvivors",
    "ValueOutOfBound",
    "Verifier",
    "advertisement",
    "aggregate_locally",
    "aggregator",
    "ed25519_signer",
    "ed25519_verifier",
    "local_noise",
    "run_session",
    "with_noise",
]
