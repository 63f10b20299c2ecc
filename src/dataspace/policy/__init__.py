"""Usage policies: the ODRL 2.2 model, JSON-LD, our vocabulary, the evaluator, templates.

Pure: no I/O, no store, no HTTP. See docs/policy.md.
"""

from dataspace.policy.errors import PolicyDenied, PolicyError
from dataspace.policy.evaluate import (
    NEGOTIATION_DEFERRED,
    Decision,
    Enforcement,
    Obligation,
    Reason,
    evaluate,
)
from dataspace.policy.jsonld import DSP_CONTEXT, parse_policy, to_jsonld
from dataspace.policy.lint import lint_policy
from dataspace.policy.model import (
    Constraint,
    LogicalConstraint,
    LogicalOp,
    Operator,
    Policy,
    PolicyType,
    Rule,
)
from dataspace.policy.request import Price, Request
from dataspace.policy.templates import from_template, list_templates
from dataspace.policy.vocabulary import (
    DEFAULT_VOCABULARY,
    LEFT_OPERANDS,
    NS,
    OUTPUT_MODES,
    Vocabulary,
)

__all__ = [
    "DEFAULT_VOCABULARY",
    "DSP_CONTEXT",
    "LEFT_OPERANDS",
    "NEGOTIATION_DEFERRED",
    "NS",
    "OUTPUT_MODES",
    "Constraint",
    "Decision",
    "Enforcement",
    "LogicalConstraint",
    "LogicalOp",
    "Obligation",
    "Operator",
    "Policy",
    "PolicyDenied",
    "PolicyError",
    "PolicyType",
    "Price",
    "Reason",
    "Request",
    "Rule",
    "Vocabulary",
    "evaluate",
    "from_template",
    "lint_policy",
    "list_templates",
    "parse_policy",
    "to_jsonld",
]
