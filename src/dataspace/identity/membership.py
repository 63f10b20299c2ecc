"""The space's membership list: which nodes belong, where they are, and their keys.

The operator signs the list as a C2SP signed note (:mod:`dataspace.identity.note`). The note's
text is line-based, UTF-8, one record per line, fields separated by single spaces::

    dataspace membership v1
    space <space name>
    serial <n>
    issued <RFC 3339 UTC, e.g. 2026-01-01T00:00:00Z>
    expires <RFC 3339 UTC>
    member <node name> <base URL> <verifier key> <role>[,<role>...]
    member ...

Node names and roles are ``[a-z0-9][a-z0-9._:-]*``; the base URL is absolute http(s) without
query or fragment; the verifier key is the node's C2SP verifier key string
``name+hhhhhhhh+base64(0x01||pub)``. Members appear in any order; names, keys and key IDs are
unique. A list with a higher serial replaces a lower one; loading with ``previous_serial``
refuses a rollback.

The keyid a node puts in its HTTP signatures is its verifier key's ``name+hhhhhhhh``
(:func:`http_key_id`): it names both the key and its hash, so it is unique on a list whose keys
are unique and never ambiguous across a key rotation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dataspace.errors import Forbidden, SignatureError, VerificationError
from dataspace.identity.note import NoteSigner, NoteVerifier, open_note, sign_note

HEADER = "dataspace membership v1"
MAX_MEMBERS = 10_000
ISSUE_SKEW = timedelta(minutes=5)  # how far in the future `issued` may lie
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._:\-]{0,99}$")
_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


class MembershipError(VerificationError):
    """The membership list is malformed, expired, or older than the one we have."""

    code = "invalid_membership"


class NotAMember(Forbidden):
    """A request signed by a key that is not on the space's membership list."""

    code = "not_a_member"


def http_key_id(verifier: NoteVerifier | NoteSigner) -> str:
    """The keyid of HTTP signatures: ``<key name>+<key ID hex>`` (``dataspace/bank+1a2b3c4d``)."""
    return f"{verifier.name}+{verifier.key_id.hex()}"


@dataclass(frozen=True)
class Member:
    name: str
    url: str
    verifier_key: str
    roles: tuple[str, ...]

    @cached_property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier.parse(self.verifier_key)

    @cached_property
    def key_id(self) -> str:
        return http_key_id(self.verifier)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.verifier.public_bytes)

    def line(self) -> str:
        return f"member {self.name} {self.url} {self.verifier_key} {','.join(self.roles)}"


@dataclass(frozen=True)
class Membership:
    space: str
    serial: int
    issued: datetime
    expires: datetime
    members: tuple[Member, ...]
    text: str = ""
    _by_key: dict[str, Member] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_key", {m.key_id: m for m in self.members})

    def by_name(self, name: str) -> Member | None:
        return next((m for m in self.members if m.name == name), None)

    def by_key_id(self, keyid: str) -> Member | None:
        return self._by_key.get(keyid)

    def require_member(self, keyid: str) -> Member:
        """The member whose key signs as ``keyid``; raise :class:`NotAMember` otherwise."""
        member = self.by_key_id(keyid)
        if member is None:
            raise NotAMember(
                f"key {keyid!r} is not on the membership list of space {self.space!r} "
                f"(serial {self.serial})",
                hint="a node talks only to peers on the operator-signed list; "
                "ask the operator to add the node, or load the newest list",
                keyid=keyid,
            )
        return member

    def with_role(self, role: str) -> tuple[Member, ...]:
        return tuple(m for m in self.members if role in m.roles)


def format_time(value: datetime) -> str:
    if value.tzinfo is None:
        raise MembershipError("membership times must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str, where: str) -> datetime:
    if not _TIME_RE.match(value):
        raise MembershipError(
            f"{where}: {value!r} is not an RFC 3339 UTC time like 2026-01-01T00:00:00Z"
        )
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise MembershipError(f"{where}: {value!r} is not a valid date and time") from None


def _check_url(url: str, where: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise MembershipError(f"{where}: base URL {url!r} is malformed") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MembershipError(f"{where}: base URL {url!r} must be absolute http(s)")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise MembershipError(f"{where}: base URL {url!r} may not hold a query, fragment or user")


def parse_membership_text(text: str) -> Membership:
    """Parse (and check) the note text of a membership list; verifies no signature."""
    if not text.endswith("\n"):
        raise MembershipError("membership list must end with a newline")
    lines = text[:-1].split("\n")
    if lines[0] != HEADER:
        raise MembershipError(f"line 1: expected {HEADER!r}, got {lines[0][:80]!r}")
    fields: dict[str, str] = {}
    for number, key in enumerate(("space", "serial", "issued", "expires"), 2):
        line = lines[number - 1] if len(lines) >= number else ""
        word, _, value = line.partition(" ")
        if word != key or not value or " " in value:
            raise MembershipError(f"line {number}: expected '{key} <value>', got {line[:80]!r}")
        fields[key] = value
    if not _NAME_RE.match(fields["space"]):
        raise MembershipError(f"line 2: space name {fields['space']!r} is not [a-z0-9._:-]")
    if not fields["serial"].isdigit() or len(fields["serial"]) > 18:
        raise MembershipError(f"line 3: serial {fields['serial']!r} is not a non-negative integer")
    issued = _parse_time(fields["issued"], "line 4")
    expires = _parse_time(fields["expires"], "line 5")
    if expires <= issued:
        raise MembershipError("line 5: the list expires before it is issued")
    members: list[Member] = []
    names: set[str] = set()
    keys: dict[bytes, str] = {}
    key_ids: set[str] = set()
    if len(lines) - 5 > MAX_MEMBERS:
        raise MembershipError(f"membership list has more than {MAX_MEMBERS} members")
    for number, line in enumerate(lines[5:], 6):
        where = f"line {number}"
        parts = line.split(" ")
        if len(parts) != 5 or parts[0] != "member":
            raise MembershipError(
                f"{where}: expected 'member <name> <url> <verifier key> <roles>', "
                f"got {line[:120]!r}"
            )
        _, name, url, vkey, roles_field = parts
        if not _NAME_RE.match(name):
            raise MembershipError(f"{where}: member name {name!r} is not [a-z0-9._:-]")
        _check_url(url, where)
        try:
            verifier = NoteVerifier.parse(vkey)
        except SignatureError as exc:
            raise MembershipError(f"{where}: {exc.message}") from None
        roles = tuple(roles_field.split(","))
        bad = [r for r in roles if not _NAME_RE.match(r)]
        if bad or len(set(roles)) != len(roles):
            raise MembershipError(f"{where}: roles {roles_field!r} are not distinct [a-z0-9._:-]")
        if name in names:
            raise MembershipError(f"{where}: duplicate member name {name!r}")
        if verifier.public_bytes in keys:
            raise MembershipError(
                f"{where}: member {name!r} has the same key as {keys[verifier.public_bytes]!r}"
            )
        key_id = http_key_id(verifier)
        if key_id in key_ids:
            raise MembershipError(f"{where}: duplicate key id {key_id!r}")
        if verifier.name != f"dataspace/{name}":  # the name its notes and cosignatures carry
            raise MembershipError(
                f"{where}: member {name!r} lists a key named {verifier.name!r}, not "
                f"'dataspace/{name}'",
                hint="a member's key is its node key (node.pub), named after the member",
            )
        names.add(name)
        keys[verifier.public_bytes] = name
        key_ids.add(key_id)
        members.append(Member(name, url, vkey, roles))
    return Membership(fields["space"], int(fields["serial"]), issued, expires, tuple(members), text)


def build_membership(
    space: str,
    serial: int,
    members: Iterable[Member],
    *,
    issued: datetime,
    expires: datetime,
) -> str:
    """The text of a membership list (checked by parsing it back)."""
    lines = [
        HEADER,
        f"space {space}",
        f"serial {serial}",
        f"issued {format_time(issued)}",
        f"expires {format_time(expires)}",
        *(m.line() for m in members),
    ]
    text = "\n".join(lines) + "\n"
    parse_membership_text(text)
    return text


def sign_membership(text: str, operator_signer: NoteSigner) -> str:
    """Sign a membership list's text as a note by the operator."""
    parse_membership_text(text)
    return sign_note(text, [operator_signer])


def load_membership(
    note: str,
    operator_verifier_key: str,
    *,
    now: datetime,
    previous_serial: int | None = None,
) -> Membership:
    """Verify the operator's signature, then the list's validity, and return it.

    Raises :class:`~dataspace.errors.SignatureError` when the operator did not sign it, and
    :class:`MembershipError` when it is malformed, not yet valid, expired, or older than
    ``previous_serial`` (a rollback to a list a removed member was still on).
    """
    operator = NoteVerifier.parse(operator_verifier_key)
    opened = open_note(note, [operator])
    membership = parse_membership_text(opened.text)
    if membership.issued > now + ISSUE_SKEW:
        raise MembershipError(
            f"membership list serial {membership.serial} is issued in the future "
            f"({format_time(membership.issued)})",
            hint="check this node's clock, or the operator's",
        )
    if now >= membership.expires:
        raise MembershipError(
            f"membership list serial {membership.serial} expired at "
            f"{format_time(membership.expires)}",
            hint="fetch the operator's current list",
        )
    if previous_serial is not None and membership.serial < previous_serial:
        raise MembershipError(
            f"membership list serial {membership.serial} is older than the loaded serial "
            f"{previous_serial}: refusing a rollback",
            hint="an old list may still name removed members; fetch the operator's current list",
        )
    return membership


__all__ = [
    "HEADER",
    "Member",
    "Membership",
    "MembershipError",
    "NotAMember",
    "build_membership",
    "http_key_id",
    "load_membership",
    "parse_membership_text",
    "sign_membership",
]
