"""Whose keys sign a secure aggregation's key advertisements: party index → node → node key.

The initiator's opening step names the node behind every party index (``members``); each
receiver takes that node's Ed25519 key from *its own* copy of the space's membership list,
never from the job, and verifies every advertisement against it
(docs/secure-aggregation.md, threat model).
"""

from __future__ import annotations

from typing import Any

from dataspace.errors import UsageError
from dataspace.privacy.secagg import AdvertisementRejected
from dataspace.services.node import Node

__all__ = ["party_keys", "party_names"]


def party_names(members: Any, parties: tuple[int, ...]) -> dict[int, str]:
    """The ``members`` field of an aggregation's opening: [[party index, node name], ...]."""
    try:
        names = {int(i): str(name) for i, name in members or []}
    except (TypeError, ValueError):
        raise UsageError("'members' must list [party index, node name] pairs") from None
    if set(names) != set(parties) or len(set(names.values())) != len(names):
        raise AdvertisementRejected(
            "the job's party list does not name one distinct node for every party index",
            hint="the initiator must send 'members' for every party; the job is refused",
        )
    return names


def party_keys(node: Node, names: dict[int, str]) -> dict[int, bytes]:
    """Each party's Ed25519 node key, from this node's membership list (never from the job)."""
    from dataspace.services import space

    members = space.membership(node)
    keys = {}
    for index, name in names.items():
        member = members.by_name(name)
        if member is None:
            raise AdvertisementRejected(
                f"party {index} ({name}) is not on {node.name}'s membership list: its key "
                "advertisement cannot be checked",
                hint="every party must be a member of the space",
            )
        keys[index] = member.verifier.public_bytes
    return keys
