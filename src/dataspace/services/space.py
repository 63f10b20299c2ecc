"""The space a node belongs to: the operator's key and the signed membership list.

A node talks only to peers on the list its operator signed. On disk::

    space/operator.pub      the operator's verifier key (C2SP), fixed when the node joins
    space/membership.note   the current signed list; replaced only by a higher serial

Any node can act as a space's operator: ``issue_membership`` signs a list with its key.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dataspace.errors import NotFound, UsageError
from dataspace.identity.membership import (
    Member,
    Membership,
    MembershipError,
    build_membership,
    load_membership,
    parse_membership_text,
    sign_membership,
)
from dataspace.identity.note import NoteVerifier, parse_note
from dataspace.ledger import log
from dataspace.scratch import write_whole
from dataspace.services.node import Node

SPACE_DIR = "space"
OPERATOR_FILE = "operator.pub"
MEMBERSHIP_FILE = "membership.note"
MAX_VALID_DAYS = 3650  # a list lives at most ten years; the operator signs a new one sooner

_cache: dict[Path, tuple[int, str, Membership]] = {}


def _paths(node: Node) -> tuple[Path, Path]:
    base = node.root / SPACE_DIR
    return base / OPERATOR_FILE, base / MEMBERSHIP_FILE


def membership(node: Node, *, now: datetime | None = None) -> Membership:
    """The verified, unexpired membership list this node holds (cached until the file changes)."""
    operator_file, note_file = _paths(node)
    if not note_file.is_file() or not operator_file.is_file():
        raise UsageError(
            f"node {node.name} has not joined a space",
            hint="run `dataspace space join NOTE --operator-key KEY` with the operator's list",
        )
    stat = note_file.stat()
    now = now or datetime.now(UTC)
    cached = _cache.get(note_file)
    if cached and cached[0] == stat.st_mtime_ns and now < cached[2].expires:
        return cached[2]
    operator_key = operator_file.read_text(encoding="utf-8").strip()
    loaded = load_membership(note_file.read_text(encoding="utf-8"), operator_key, now=now)
    _cache[note_file] = (stat.st_mtime_ns, operator_key, loaded)
    return loaded


def operator_key(node: Node) -> str:
    operator_file, _ = _paths(node)
    if not operator_file.is_file():
        raise UsageError(
            f"node {node.name} has not joined a space", hint="run `dataspace space join`"
        )
    return operator_file.read_text(encoding="utf-8").strip()


def join(node: Node, note: str, operator_verifier_key: str, *, actor: str) -> Membership:
    """Adopt a signed membership list; a later list must come from the same operator with a
    higher serial (a lower one could still name members that were removed)."""
    operator_file, note_file = _paths(node)
    NoteVerifier.parse(operator_verifier_key)  # refuse a malformed key before anything else
    previous: int | None = None
    if operator_file.is_file():
        held = operator_file.read_text(encoding="utf-8").strip()
        if held != operator_verifier_key:
            raise UsageError(
                "this node already belongs to a space run by another operator",
                hint=f"the node trusts {held.split('+')[0]}; a node belongs to one space",
            )
    if note_file.is_file():
        previous = parse_membership_text(
            parse_note(note_file.read_text(encoding="utf-8")).text
        ).serial
    loaded = load_membership(
        note, operator_verifier_key, now=datetime.now(UTC), previous_serial=previous
    )
    if loaded.by_name(node.name) is None:
        raise UsageError(
            f"the membership list does not name this node ({node.name})",
            hint="ask the operator to add it, with this node's URL and public key",
        )
    listed = loaded.by_name(node.name)
    if listed is not None and listed.verifier_key != node.verifier_key():
        raise UsageError(
            f"the membership list names {node.name} with another key",
            hint="ask the operator to list this node's key: " + node.verifier_key(),
        )
    operator_file.parent.mkdir(exist_ok=True)
    write_whole(operator_file, (operator_verifier_key + "\n").encode())
    write_whole(note_file, note.encode())
    with node.store.write() as session:
        log.append(
            session,
            actor=actor,
            action="space.joined",
            payload={
                "space": loaded.space,
                "serial": loaded.serial,
                "operator": operator_verifier_key,
                "members": [m.name for m in loaded.members],
            },
        )
    return loaded


def issue_membership(
    operator: Node,
    members: Iterable[Member],
    *,
    space: str,
    serial: int,
    valid_days: int = 365,
    actor: str,
) -> str:
    """Sign a membership list with the operator node's key; logged in the operator's ledger."""
    if not 1 <= valid_days <= MAX_VALID_DAYS:
        raise UsageError(f"a membership list is valid for 1 to {MAX_VALID_DAYS} days, not "
                         f"{valid_days}", hint="sign a new list before it expires instead")
    members = list(members)
    issued = datetime.now(UTC).replace(microsecond=0)
    expires = issued + timedelta(days=valid_days)
    try:
        text = build_membership(space, serial, members, issued=issued, expires=expires)
    except MembershipError as exc:  # the operator's input, not a list received: say which
        raise UsageError(f"cannot sign this list: {_culprit(space, serial, members)}: "
                         f"{exc.message}",
                         hint="a space is a name (letters, digits, '-', '_', '.'); a member is "
                         "NAME,URL,KEY[,ROLES]") from None
    note = sign_membership(text, operator.signer)
    with operator.store.write() as session:
        log.append(
            session,
            actor=actor,
            action="space.membership_issued",
            payload={"space": space, "serial": serial, "members": [m.name for m in members]},
        )
    return note


def _culprit(space: str, serial: int, members: list[Member]) -> str:
    """Which part of a list that does not build is wrong: the space or serial, or a member."""
    moment = datetime.now(UTC).replace(microsecond=0)
    try:
        build_membership(space, serial, [], issued=moment, expires=moment + timedelta(days=1))
    except MembershipError:
        return f"the space {space!r} or serial {serial}"
    for member in members:
        try:
            build_membership(space, serial, [member], issued=moment,
                             expires=moment + timedelta(days=1))
        except MembershipError:
            return f"member {member.name!r}"
    return "the members together"


def self_member(node: Node) -> Member:
    """This node's own entry on the list (its advertised URL)."""
    return member(node, node.name)


def dealer(node: Node) -> str:
    """The space's dealer of correlated randomness: the first member with role ``dealer``
    in this node's own membership list."""
    dealers = [m.name for m in membership(node).members if "dealer" in m.roles]
    if not dealers:
        raise UsageError("the space names no dealer", hint="the operator joins with role dealer")
    return dealers[0]


def member(node: Node, name: str) -> Member:
    found = membership(node).by_name(name)
    if found is None:
        raise NotFound(
            f"{name!r} is not a member of this node's space",
            hint="see `dataspace space show` for the members",
        )
    return found
