"""FedAvg job parameters arrive as JSON (decimals as strings) and are typed at the boundary."""

from __future__ import annotations

import pytest

from dataspace.errors import UsageError
from dataspace.services.train_fedavg import config_of


def test_decimal_parameters_sent_as_strings_are_typed() -> None:
    config = config_of({"learning_rate": "0.1", "rounds": "3", "l2": 0.01, "seed": "7"})
    assert config.learning_rate == 0.1 and isinstance(config.learning_rate, float)
    assert config.rounds == 3 and isinstance(config.rounds, int)
    assert config.seed == 7


def test_a_parameter_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(UsageError, match="invalid FedAvg parameter"):
        config_of({"learning_rate": "fast"})
