"""Contract negotiation (DSP 2025-1) between two nodes: both sides, as service functions.

The router (``node/routers/dsp.py``) authenticates the peer and calls one ``handle_*``
function per DSP endpoint; each returns a :class:`Reply` (status, body) plus the follow-up
messages to send *after* the answer (FastAPI background tasks; tests call them directly).
Local users call :func:`request_contract`, :func:`withdraw`, :func:`approve`, :func:`reject`,
:func:`list_contracts` and :func:`show_contract`.

How purpose and signatures travel (see docs/contracts.md):

* **purpose** — the consumer requests the catalog offer with one extra constraint in every
  permission: ``{"leftOperand": "purpose", "operator": "eq", "rightOperand": P}``. The provider
  accepts the request only if removing that constraint gives back its stored offer exactly.
* **signatures** — the ContractAgreementMessage carries the provider's Ed25519 signature over
  the agreement, the ContractAgreementVerificationMessage the consumer's, both in the extension
  member :data:`SIGNATURE` (an absolute IRI, so the message stays valid compact JSON-LD).

Every state change and every refused message is a ledger entry, in the same transaction as the
change. A node moves its own state *before* it sends the message that causes it (so the
peer's answer can never overtake it); if the message cannot be delivered within the retry
budget, the negotiation is terminated locally and a termination message is attempted.

This module is the public face; the work lives in

* :mod:`~dataspace.services.neg_common` — :class:`Reply`, the errors, the hooks onto the space
  (:func:`lookup_member`, :func:`callback_address`), refusing, addressing, :func:`terminate`;
* :mod:`~dataspace.services.neg_terms` — the purpose on the offer, the provisional decision;
* :mod:`~dataspace.services.neg_consumer` — :func:`request_contract`, :func:`wait`,
  :func:`handle_agreement`;
* :mod:`~dataspace.services.neg_provider` — :func:`handle_request`, :func:`agree`,
  :func:`approve`, :func:`reject`, :func:`handle_verification`;
* :mod:`~dataspace.services.neg_handlers` — :func:`handle_get`, :func:`handle_message`,
  :func:`handle_offer`;
* :mod:`~dataspace.services.neg_views` — :func:`list_contracts`, :func:`show_contract`.

A test that replaces a hook or ``deliver`` patches it where it is looked up: in
:mod:`~dataspace.services.neg_common` (or the side's module that imported it).
"""

from __future__ import annotations

from dataspace.contracts.messages import policy_to_wire
from dataspace.services.neg_common import EXT as EXT
from dataspace.services.neg_common import FINAL as FINAL
from dataspace.services.neg_common import PEER_ACTOR as PEER_ACTOR
from dataspace.services.neg_common import SIGNATURE, OfferUnavailable, Reply, terminate
from dataspace.services.neg_common import NotSupported as NotSupported
from dataspace.services.neg_common import callback_address as callback_address
from dataspace.services.neg_common import logger as logger
from dataspace.services.neg_common import lookup_member as lookup_member
from dataspace.services.neg_common import refuse as refuse
from dataspace.services.neg_consumer import handle_agreement, request_contract, wait, withdraw
from dataspace.services.neg_handlers import handle_get, handle_message, handle_offer
from dataspace.services.neg_provider import (
    agree,
    approve,
    build_agreement,
    handle_request,
    handle_verification,
    reject,
)
from dataspace.services.neg_terms import provisional_decision as provisional_decision
from dataspace.services.neg_terms import split_purpose, with_purpose
from dataspace.services.neg_views import list_contracts, show_contract

__all__ = [
    "SIGNATURE",
    "OfferUnavailable",
    "Reply",
    "agree",
    "approve",
    "build_agreement",
    "handle_agreement",
    "handle_get",
    "handle_message",
    "handle_offer",
    "handle_request",
    "handle_verification",
    "list_contracts",
    "policy_to_wire",
    "reject",
    "request_contract",
    "show_contract",
    "split_purpose",
    "terminate",
    "wait",
    "with_purpose",
    "withdraw",
]
