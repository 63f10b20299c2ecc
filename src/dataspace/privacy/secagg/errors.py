"""Errors of secure aggregation.

InputError ── SecAggError            a secure-aggregation message or value is refused
              ├─ OutOfOrder          a message for a round the state machine is not in
              ├─ NotAParticipant     a sender or recipient outside the round's party set
              ├─ TooFewSurvivors     fewer parties left than the threshold: nothing released
              ├─ OverflowRisk        bound × parties does not fit the signed range of 2^k
              ├─ ValueOutOfBound     an input value is NaN, infinite or beyond the bound
              └─ AggregateOverflow   a decoded sum lies outside ±parties × bound
VerificationError ┬─ ShareRejected          a share ciphertext fails AES-GCM authentication
                  └─ AdvertisementRejected  a key advertisement is unsigned, or not signed by
                                            the node key the membership list holds for it
"""

from __future__ import annotations

from dataspace.errors import InputError, VerificationError

__all__ = [
    "AdvertisementRejected",
    "AggregateOverflow",
    "NotAParticipant",
    "OutOfOrder",
    "OverflowRisk",
    "SecAggError",
    "ShareRejected",
    "TooFewSurvivors",
    "ValueOutOfBound",
]


class SecAggError(InputError):
    code = "secagg_refused"


class OutOfOrder(SecAggError):
    code = "secagg_out_of_order"


class NotAParticipant(SecAggError):
    code = "secagg_not_a_participant"


class TooFewSurvivors(SecAggError):
    code = "secagg_too_few_survivors"


class OverflowRisk(SecAggError):
    code = "secagg_overflow_risk"


class ValueOutOfBound(SecAggError):
    code = "secagg_value_out_of_bound"


class AggregateOverflow(SecAggError):
    code = "secagg_aggregate_overflow"


class ShareRejected(VerificationError):
    code = "secagg_share_rejected"


class AdvertisementRejected(VerificationError):
    code = "secagg_advertisement_rejected"
