"""The twelve 数据要素× sector scenarios: one plugin each (see ``base.Scenario``).

``get(name)`` returns a scenario by name; ``all()`` every one, in the action plan's order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a scenario is asked for: `dataspace --help` needs none of it
    from dataspace.scenarios.base import Scenario

DEFAULT = "finance"


def _registry() -> dict[str, Scenario]:
    from dataspace.scenarios.base import SECTORS
    from dataspace.scenarios.sectors import (
        agriculture,
        carbon,
        commerce,
        emergency,
        finance,
        health,
        manufacturing,
        science,
        tourism,
        transport,
        urban,
        weather,
    )

    found: list[Scenario] = [
        finance.SmeCredit(),
        manufacturing.FailurePrediction(),
        science.Qsar(),
        urban.CareAlerts(),
        commerce.StockOut(),
        transport.MultimodalEta(),
        weather.WeatherIndexInsurance(),
        carbon.CarbonFootprint(),
        health.TestRecognition(),
        agriculture.ResidueSampling(),
        emergency.EmergencyHalt(),
        tourism.TourismCrowd(),
    ]
    order = list(SECTORS)
    found.sort(key=lambda s: order.index(s.sector))
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
