"""Errors of the policy package.

Both subclass the project's tree (see :mod:`dataspace.errors`); they live here until the tree
grows them::

    InputError
    └── PolicyError        a policy document or template call that cannot be accepted
    Forbidden
    └── PolicyDenied       a request the policy does not allow (carries the decision)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dataspace.errors import Forbidden, InputError

if TYPE_CHECKING:
    from dataspace.policy.evaluate import Decision


class PolicyError(InputError):
    """A policy (JSON-LD or template call) is malformed; ``path`` names where."""

    code = "invalid_policy"
    default_hint = "see docs/policy.md for what a policy may say, with examples"

    def __init__(self, message: str, *, path: str = "", hint: str | None = None, **details: Any):
        full = f"{path}: {message}" if path else message
        if path:
            details.setdefault("path", path)
        super().__init__(full, hint=hint, **details)
        self.path = path


class PolicyDenied(Forbidden):
    """The policy denies the request; ``decision`` carries every reason."""

    code = "policy_denied"

    def __init__(self, decision: Decision) -> None:
        failed = [r.message for r in decision.reasons if not r.held]
        super().__init__(
            "the usage policy denies this request: " + ("; ".join(failed[:3]) or "no permission"),
            hint="see the decision's reasons; ask the provider for an agreement that covers it",
            reasons=[r.to_dict() for r in decision.reasons],
        )
        self.decision = decision
