"""Errors of federated learning and of its secret-sharing engine.

    DataspaceError
    ├── InputError ── InvalidTrainingInput   misaligned rows, no labels, bad config
    └── FederatedError                       a multi-party protocol could not proceed
        └── MpcProtocolError                 a party broke the MPC protocol's rules
            ├── TripleReused                 a Beaver triple or mask asked for twice
            └── MalformedMessage             bytes that are not a valid protocol message
"""

from __future__ import annotations

from dataspace.errors import DataspaceError, InputError


class InvalidTrainingInput(InputError):
    code = "invalid_training_input"


class FederatedError(DataspaceError):
    code = "federated_error"
    exit_code = 11
    http_status = 500


class MpcProtocolError(FederatedError):
    code = "mpc_protocol_error"


class TripleReused(MpcProtocolError):
    code = "triple_reused"

    def __init__(self, triple_id: str, party: str) -> None:
        super().__init__(
            f"party {party} was asked to use Beaver triple {triple_id} a second time",
            hint="a triple masks one multiplication only; reusing it reveals the operands — "
            "abort the job and start a new session with fresh triples",
            triple_id=triple_id,
            party=party,
        )


class MalformedMessage(MpcProtocolError):
    code = "malformed_message"
