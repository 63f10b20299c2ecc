"""Model parts at a node: what it staged itself is not replaced by another node's commit."""

from __future__ import annotations

from dataspace.services import models as model_store
from dataspace.services.node import Node


def test_a_commit_adds_to_the_staged_description_but_does_not_replace_it(node: Node) -> None:
    own = {"params": {"family": "vlr", "parties": ["bank", node.name], "rows": 500}}
    model_store.stage(node, model_id="m1", family="vlr", role="participant", initiator="bank",
                      part={"weights": [0.5, -0.25]}, info=own)
    forged = {"params": {"family": "vgbdt", "parties": ["bank", "someone"], "rows": 1},
              "metrics": {"auc": 0.7}}
    view = model_store.finalize(node, "m1", forged, actor="peer:bank")
    assert view["params"] == own["params"]
    assert view["metrics"] == {"auc": 0.7}
