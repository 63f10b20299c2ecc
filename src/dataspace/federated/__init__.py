"""Federated learning across nodes: vertical logistic regression on secret shares.

See docs/vfl.md for the protocol, who holds what and what is opened to whom; docs/sgb.md
(SecureBoost-style GBDT), docs/fedavg.md (horizontal FedAvg) and docs/contribution.md
(leave-one-out and Shapley values per provider).
"""

from dataspace.federated.baseline import fit_newton, train_plain
from dataspace.federated.contribution import (
    Contribution,
    leave_one_out,
    shapley,
    shapley_exact,
    shapley_monte_carlo,
)
from dataspace.federated.fedavg import Client, DpFedAvg, FedAvgConfig, FedAvgResult, fedavg
from dataspace.federated.hfl_synth import make_horizontal
from dataspace.federated.metrics import auc, log_loss
from dataspace.federated.plan import Scaler, TrainConfig
from dataspace.federated.sgb import SecureBoost, SecureBoostNotAllowed, SgbModel, SgbParams
from dataspace.federated.sgb import predict as sgb_predict
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
    "Client",
    "Contribution",
    "DpFedAvg",
    "EpochRecord",
    "FedAvgConfig",
    "FedAvgResult",
    "PartyData",
    "PartyModel",
    "Prediction",
    "Scaler",
    "SecureBoost",
    "SecureBoostNotAllowed",
    "SgbModel",
    "SgbParams",
    "TrainConfig",
    "VerticalData",
    "VflResult",
    "auc",
    "fedavg",
    "fit_newton",
    "leave_one_out",
    "log_loss",
    "make_horizontal",
    "make_vertical",
    "predict",
    "sgb_predict",
    "shapley",
    "shapley_exact",
    "shapley_monte_carlo",
    "train",
    "train_plain",
]
