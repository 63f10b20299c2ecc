"""Errors of the Dataspace Protocol layer.

    InputError ── ProtocolError        a DSP message that does not validate or does not fit
                  └─ IllegalTransition a message the state machine does not allow (HTTP 400)

Unknown or foreign processes raise :class:`dataspace.errors.NotFound` (HTTP 404); agreement
signatures that do not verify raise :class:`dataspace.errors.SignatureError`.
"""

from __future__ import annotations

from typing import Any

from dataspace.errors import InputError


class ProtocolError(InputError):
    """A DSP message is malformed, of the wrong type, or inconsistent with its process.

    The DSP HTTPS bindings answer client errors with 400 and a ContractNegotiationError /
    TransferError / CatalogError body.
    """

    code = "protocol_error"
    http_status = 400


class IllegalTransition(ProtocolError):
    """The state machine does not allow this message, from this sender, in this state."""

    code = "illegal_transition"

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        super().__init__(message, hint=hint, **details)
