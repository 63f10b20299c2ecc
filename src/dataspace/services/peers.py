"""Signed HTTP clients to other members of the space."""

from __future__ import annotations

import httpx

from dataspace.identity.peer import PeerAuth
from dataspace.outbound import http_client
from dataspace.services import space
from dataspace.services.node import Node

DEFAULT_TIMEOUT = 30.0


def peer_client(node: Node, peer_name: str, *, timeout: float = DEFAULT_TIMEOUT) -> httpx.Client:
    """An httpx client for ``peer_name``'s node; every request is signed with this node's key.

    Raises NotFound when the peer is not on the membership list: a node talks only to members.
    """
    peer = space.member(node, peer_name)
    auth = PeerAuth(node.signer, lifetime=node.limits.peer_signature_lifetime_seconds)
    return http_client(base_url=peer.url, auth=auth, timeout=timeout)
