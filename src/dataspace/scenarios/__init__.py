"""The twelve 数据要素× sector scenarios: one plugin each (see ``base.Scenario``).

``get(name)`` returns a scenario by name; ``all()`` every one, in the action plan's order.
"""

from __future__ import annotations

from dataspace.scenarios.base import Scenario

DEFAULT = "finance"


def _registry() -> dict[str, Scenario]:
    from dataspace.scenarios.sectors import emergency, federated, tourism

    found: list[Scenario] = [
        *federated.scenarios(),
        emergency.EmergencyHalt(),
        tourism.TourismCrowd(),
    ]
    return {s.name: s for s in found}


def all() -> list[Scenario]:
    return list(_registry().values())


def names() -> list[str]:
    return list(_registry())


def get(name: str) -> Scenario:
    registry = _registry()
    if name not in registry:
        from dataspace.errors import UsageError

        raise UsageError(f"unknown scenario {name!r}", hint="scenarios: " + ", ".join(registry))
    return registry[name]
