"""The reason a user gives for ending something (a transfer, a negotiation): it is sent to the
peer and written to both ledgers, so it must say something and stay short."""

from __future__ import annotations

from dataspace.errors import UsageError

MAX_REASON = 500


def checked_reason(reason: str, *, ending: str) -> str:
    """``reason`` without surrounding blanks; UsageError when that is empty or too long."""
    text = reason.strip()
    if not text or len(text) > MAX_REASON:
        got = "an empty reason" if not text else f"{len(text)} characters"
        raise UsageError(
            f"{ending} needs a reason of 1 to {MAX_REASON} characters; got {got}",
            hint="say why, e.g. --reason 'agreement under review'",
        )
    return text
