"""DSP 2025-1 transfer processes between two nodes: both sides, as service functions.

The only way rows leave a node (docs/transfers.md). The consumer asks with
:func:`request_transfer` (a ``TransferRequestMessage`` naming a FINALIZED agreement and an
output mode in ``format``); the provider answers 201, then — after the answer — evaluates the
agreement's policy with ``action=transfer`` and ``output=`` the mode, and either terminates
(``transfer.denied`` + a zero-price usage record) or writes a Parquet extract of the allowed
columns (identifier and sensitive columns pseudonymized per agreement when asked), moves to
STARTED and sends a ``TransferStartMessage`` whose ``dataAddress`` is its HTTP pull endpoint
with a one-time token. The consumer pulls with a signed request, checks sha256 and rows, writes
the file under its ``received/`` folder, moves to COMPLETED and sends a
``TransferCompletionMessage``. Every step is a ledger entry on the node that takes it.

The routers (``node/routers/dsp_transfers.py``, ``peer_transfers.py``, ``transfers.py``) call
one function per endpoint; follow-up messages go in :class:`Reply` ``after`` tasks.

This module is the public face and holds the two test seams, :data:`TRANSPORT` and
:data:`CLIENTS` (both read here at call time); the work lives in

* :mod:`~dataspace.services.transfer_common` — modes and formats, refusing, addressing,
  :func:`terminate`;
* :mod:`~dataspace.services.transfer_consumer` — :func:`request_transfer`, :func:`wait`,
  :func:`pull`;
* :mod:`~dataspace.services.transfer_provider` — :func:`handle_request`, :func:`decide`,
  :func:`provide` (decision, extract, start), :func:`serve_pull`;
* :mod:`~dataspace.services.transfer_handlers` — :func:`handle_get`, :func:`handle_message`;
* :mod:`~dataspace.services.transfer_views` — :func:`list_transfers`, :func:`show_transfer`,
  :func:`copy_received`;
* :mod:`~dataspace.services.transfer_end` — :func:`end_transfer`, a user ending a transfer
  (either role).
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from dataspace.services.catalog import Transport
from dataspace.services.neg_common import Reply as Reply
from dataspace.services.node import Node
from dataspace.services.transfer_common import EXTRACT_DIR as EXTRACT_DIR
from dataspace.services.transfer_common import FINAL as FINAL
from dataspace.services.transfer_common import (
    FORMAT_PREFIX,
    MODES,
    format_for,
    mode_of,
    refuse,
    terminate,
)
from dataspace.services.transfer_common import HTTP_ENDPOINT as HTTP_ENDPOINT
from dataspace.services.transfer_common import NS as NS
from dataspace.services.transfer_common import PARQUET_MEDIA_TYPE as PARQUET_MEDIA_TYPE
from dataspace.services.transfer_common import PULL_PATH as PULL_PATH
from dataspace.services.transfer_common import RECEIVED_DIR as RECEIVED_DIR
from dataspace.services.transfer_common import logger as logger
from dataspace.services.transfer_consumer import pull, request_transfer, wait
from dataspace.services.transfer_end import end_transfer
from dataspace.services.transfer_handlers import handle_get, handle_message
from dataspace.services.transfer_provider import (
    decide,
    handle_request,
    provide,
    serve_pull,
    settle_pull,
)
from dataspace.services.transfer_views import copy_received, list_transfers, show_transfer

#: (node, peer) -> a signed httpx client for the pull; tests substitute one
ClientFactory = Callable[[Node, str], httpx.Client]
#: what the routers pass as transport (None: signed HTTP); tests substitute one
TRANSPORT: Transport | None = None
CLIENTS: ClientFactory | None = None


__all__ = [
    "FORMAT_PREFIX",
    "MODES",
    "copy_received",
    "decide",
    "end_transfer",
    "format_for",
    "handle_get",
    "handle_message",
    "handle_request",
    "list_transfers",
    "mode_of",
    "provide",
    "pull",
    "refuse",
    "request_transfer",
    "serve_pull",
    "settle_pull",
    "show_transfer",
    "terminate",
    "wait",
]
