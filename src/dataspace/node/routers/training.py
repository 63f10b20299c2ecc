"""Federated training for this node's users: train a model across nodes, follow it, see it.

``POST /api/v1/train`` validates the request, claims a job id and trains in the background
(202); ``GET /api/v1/train/jobs/{job_id}`` shows the job with every node's step events;
``POST /api/v1/train/jobs/{job_id}/retry`` starts a failed job again; ``POST /api/v1/predict``
scores new aligned rows with a trained vertical model (synchronously); ``GET /api/v1/models``
and ``GET /api/v1/models/{model_id}`` show the trained models this node holds a part of.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import Field

from dataspace.node.auth import EVERYONE, get_node, require
from dataspace.node.routers.fields import Body
from dataspace.services import models, predict, training
from dataspace.services.node import Node
from dataspace.services.tokens import TokenInfo

router = APIRouter(tags=["training"])

RUN_ROLES = ("admin", "consumer")


class TrainRequest(Body):
    agreements: list[str] = Field(min_length=1, max_length=4, description="one per provider")
    peers: list[str] | None = None
    model: str = Field(default="vlr", description="vlr | vgbdt | fedavg | vlinreg")
    label: str = Field(
        min_length=1,
        description="the label column at this node (fedavg: one name, or 'party:col ...')",
    )
    dataset: str | None = Field(
        default=None, description="fedavg: this node's own rows (omit to only coordinate)"
    )
    features: dict[str, list[str]] = Field(description="party -> its feature columns")
    align: list[str] = Field(default_factory=list, description="PSI align job per provider")
    params: dict[str, Any] = Field(default_factory=dict)
    holdout: float = Field(default=0.25, gt=0, lt=0.9)
    seed: int = Field(
        default=0,
        ge=0,
        le=2**63 - 1,
        description="seeds the held-out/validation splits and SGD batches, never masks",
    )
    patience: int | None = Field(
        default=None, ge=1, description="vlr, vlinreg: early stopping after this many epochs"
    )
    validation: float | None = Field(
        default=None, gt=0, lt=0.9, description="vlr, vlinreg: share of training rows validated on"
    )
    contribution: bool = True
    revenue_pool: str | None = Field(
        default=None,
        description="vertical models: 'AMOUNT CURRENCY' split among the providers by contribution",
    )
    job_id: str | None = None


@router.post("/train", status_code=202, summary="Train a model across nodes")
def post_train(
    body: TrainRequest,
    node: Node = Depends(get_node),
    token: TokenInfo = Depends(require(*RUN_ROLES)),
) -> dict[str, Any]:
    """Every provider checks its own agreement (action `federated-train`) first. Answers the
    job's view at once; poll `GET /api/v1/train/jobs/{job_id}`."""
    job = training.start_train(
        node,
        agreements=body.agreements,
        peers=body.peers,
        model=body.model,
        label=body.label,
        features=body.features,
        align=body.align,
        dataset=body.dataset,
        params=body.params,
        holdout=body.holdout,
        seed=body.seed,
        patience=body.patience,
        validation=body.validation,
        contribution=body.contribution,
        revenue_pool=body.revenue_pool,
        job_id=body.job_id,
        actor=token.actor,
    )
    return training.start_background(node, job)


class PredictRequest(Body):
    model: str = Field(
        min_length=1, description="a vertical model this node trained (vlr or vgbdt)"
    )
    rows: list[str] = Field(
        min_length=1, max_length=4, description="PSI align job(s) over the new rows"
    )


@router.post("/predict", summary="Score new aligned rows with a trained vertical model")
def post_predict(
    body: PredictRequest,
    node: Node = Depends(get_node),
    token: TokenInfo = Depends(require(*RUN_ROLES)),
) -> dict[str, Any]:
    """Every provider checks its own agreement and its part of the model first; the scores
    are revealed to this node only and written under its data dir (`result.scores_file`)."""
    return predict.run_predict(node, model=body.model, rows=body.rows, actor=token.actor)


@router.get("/train/jobs/{job_id}", summary="One training job with its step events")
def get_train_job(
    job_id: str,
    node: Node = Depends(get_node),
    _token: TokenInfo = Depends(require(*EVERYONE)),
) -> dict[str, Any]:
    return training.get_job(node, job_id)


@router.post("/train/jobs/{job_id}/retry", status_code=202, summary="Start a failed job again")
def post_train_retry(
    job_id: str,
    node: Node = Depends(get_node),
    token: TokenInfo = Depends(require(*RUN_ROLES)),
) -> dict[str, Any]:
    return training.retry(node, job_id, actor=token.actor, background=True)


@router.get("/models", summary="Trained models this node holds a part of")
def get_models(
    node: Node = Depends(get_node), _token: TokenInfo = Depends(require(*EVERYONE))
) -> list[dict[str, Any]]:
    return models.list_models(node)


@router.get("/models/{model_id}", summary="A model: metrics, contribution, who holds what")
def get_model(
    model_id: str,
    node: Node = Depends(get_node),
    _token: TokenInfo = Depends(require(*EVERYONE)),
) -> dict[str, Any]:
    return models.get_model(node, model_id)
