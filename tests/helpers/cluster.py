"""A space of real nodes on loopback for tests, on top of :mod:`dataspace.scenarios.cluster`.

``start_space(tmp_path, ["tax-bureau", "bank"])`` creates an operator node and one node per
name, signs a membership list naming every node with its URL and key, has each node join it,
and starts each node's API server as a subprocess on a free loopback port. The operator's
``Node`` stays open as ``space.operator``. ``Space.stop()`` (called by the ``space_factory``
fixture at teardown) terminates the servers and closes the operator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dataspace.scenarios.cluster import NodeProcess, create, start_all, stop_all
from dataspace.services.node import Node, open_node


@dataclass
class Space:
    operator: Node
    operator_key: str
    nodes: dict[str, NodeProcess] = field(default_factory=dict)

    def start(self) -> None:
        """Start every node's server side by side (for spaces created with serve=False)."""
        start_all(self.nodes.values())

    def stop(self) -> None:
        try:
            stop_all(self.nodes.values())
        finally:
            self.operator.close()


def start_space(
    tmp_path: Path,
    names: list[str],
    *,
    database_url: str | None = None,
    schema_for: dict[str, str] | None = None,
    serve: bool = True,
    dealer: bool = False,
) -> Space:
    """Create (and by default start) a space of nodes; see the module docstring."""
    cluster = create(
        tmp_path,
        names,
        space="test-space",
        dealer=dealer,
        actor="test",
        database_url=database_url,
        schema_for=schema_for,
    )
    result = Space(open_node(tmp_path / "operator"), cluster.operator_key, cluster.nodes)
    if serve:
        try:
            result.start()
        except BaseException:
            result.stop()
            raise
    return result
