"""Federated learning across nodes: vertical logistic regression on secret shares.

See docs/vfl.md for the protocol, who holds what and what is opened to whom.
"""

from dataspace.federated.baseline import fit_newton, train_plain
from dataspace.federated.metrics import auc, log_loss
from dataspace.federated.plan import Scaler, TrainConfig
from dataspace.federated.synth import VerticalData, make_vertical
from dataspace.federated.vlr import (
    EpochRecord,
    PartyData,
    PartyModel,
    Prediction,
    VflResult,
    predict,
    train,
)

__all__ = [
    "EpochRecord",
    "PartyData",
    "PartyModel",
    "Prediction",
    "Scaler",
    "TrainConfig",
    "VerticalData",
    "VflResult",
    "auc",
    "fit_newton",
    "log_loss",
    "make_vertical",
    "predict",
    "train",
    "train_plain",
]
