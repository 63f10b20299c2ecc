"""Two-party additive secret sharing over Z_2^64 with Beaver triples from a dealer."""

from dataspace.federated.mpc.dealer import Dealer
from dataspace.federated.mpc.engine import Mpc, Party, Shared
from dataspace.federated.mpc.fixedpoint import FixedPoint, truncation_failure_bound
from dataspace.federated.mpc.net import Network, Opening, OpenLog
from dataspace.federated.mpc.sigmoid import SIGMOID, CubicSigmoid

__all__ = [
    "SIGMOID",
    "CubicSigmoid",
    "Dealer",
    "FixedPoint",
    "Mpc",
    "Network",
    "OpenLog",
    "Opening",
    "Party",
    "Shared",
    "truncation_failure_bound",
]
