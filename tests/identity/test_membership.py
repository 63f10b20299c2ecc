"""The operator-signed membership list: format, signature, validity window, rollback, lookups."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dataspace.errors import Forbidden, SignatureError
from dataspace.identity.membership import (
    Member,
    MembershipError,
    NotAMember,
    build_membership,
    http_key_id,
    load_membership,
    sign_membership,
)
from dataspace.identity.note import NoteSigner, sign_note

NOW = datetime(2026, 1, 10, tzinfo=UTC)
ISSUED = datetime(2026, 1, 1, tzinfo=UTC)
EXPIRES = datetime(2026, 2, 1, tzinfo=UTC)


def _signer(name: str) -> NoteSigner:
    return NoteSigner(name, Ed25519PrivateKey.generate())


@pytest.fixture(scope="module")
def operator() -> NoteSigner:
    return _signer("dataspace/operator")


@pytest.fixture(scope="module")
def nodes() -> dict[str, NoteSigner]:
    return {n: _signer(f"dataspace/{n}") for n in ("bank", "tax", "grid")}


def _members(nodes: dict[str, NoteSigner]) -> list[Member]:
    return [
        Member("bank", "https://bank.example", nodes["bank"].verifier_key(), ("consumer",)),
        Member("tax", "https://tax.example:8443", nodes["tax"].verifier_key(), ("provider", "gov")),
        Member("grid", "http://127.0.0.1:8002", nodes["grid"].verifier_key(), ("provider",)),
    ]


def _text(nodes: dict[str, NoteSigner], serial: int = 7, **kw: object) -> str:
    return build_membership(
        "finance-pilot",
        serial,
        _members(nodes),
        issued=kw.get("issued", ISSUED),  # type: ignore[arg-type]
        expires=kw.get("expires", EXPIRES),  # type: ignore[arg-type]
    )


def test_text_format_is_line_based(nodes: dict[str, NoteSigner]) -> None:
    lines = _text(nodes).splitlines()
    assert lines[:5] == [
        "dataspace membership v1",
        "space finance-pilot",
        "serial 7",
        "issued 2026-01-01T00:00:00Z",
        "expires 2026-02-01T00:00:00Z",
    ]
    assert lines[5] == f"member bank https://bank.example {nodes['bank'].verifier_key()} consumer"
    assert lines[6].endswith(" provider,gov")


def test_signed_list_loads_and_looks_up(operator: NoteSigner, nodes: dict[str, NoteSigner]) -> None:
    note = sign_membership(_text(nodes), operator)
    membership = load_membership(note, operator.verifier_key(), now=NOW)
    assert (membership.space, membership.serial) == ("finance-pilot", 7)
    assert [m.name for m in membership.members] == ["bank", "tax", "grid"]
    tax = membership.by_name("tax")
    assert tax is not None and tax.roles == ("provider", "gov")
    keyid = http_key_id(nodes["tax"])
    assert keyid == f"dataspace/tax+{nodes['tax'].key_id.hex()}"
    assert membership.by_key_id(keyid) == tax
    assert membership.require_member(keyid) == tax
    assert [m.name for m in membership.with_role("provider")] == ["tax", "grid"]
    assert membership.by_name("nobody") is None


def test_key_not_on_the_list_is_not_a_member(
    operator: NoteSigner, nodes: dict[str, NoteSigner]
) -> None:
    membership = load_membership(
        sign_membership(_text(nodes), operator), operator.verifier_key(), now=NOW
    )
    stranger = http_key_id(_signer("dataspace/stranger"))
    with pytest.raises(NotAMember, match=re.escape(f"key '{stranger}' is not on")) as e:
        membership.require_member(stranger)
    assert isinstance(e.value, Forbidden) and e.value.http_status == 403


def test_list_signed_by_another_key_is_refused(nodes: dict[str, NoteSigner]) -> None:
    operator, impostor = _signer("dataspace/operator"), _signer("dataspace/operator")
    note = sign_membership(_text(nodes), impostor)
    with pytest.raises(SignatureError):
        load_membership(note, operator.verifier_key(), now=NOW)


def test_list_edited_after_signing_is_refused(
    operator: NoteSigner, nodes: dict[str, NoteSigner]
) -> None:
    note = sign_membership(_text(nodes), operator)
    tampered = note.replace("consumer", "provider", 1)
    with pytest.raises(SignatureError, match="does not verify"):
        load_membership(tampered, operator.verifier_key(), now=NOW)


def test_expired_list_is_refused(operator: NoteSigner, nodes: dict[str, NoteSigner]) -> None:
    note = sign_membership(_text(nodes), operator)
    with pytest.raises(MembershipError, match="expired at 2026-02-01T00:00:00Z"):
        load_membership(note, operator.verifier_key(), now=EXPIRES)


def test_list_issued_in_the_future_is_refused(
    operator: NoteSigner, nodes: dict[str, NoteSigner]
) -> None:
    note = sign_membership(_text(nodes), operator)
    with pytest.raises(MembershipError, match="issued in the future"):
        load_membership(note, operator.verifier_key(), now=ISSUED - timedelta(hours=1))


def test_serial_rollback_is_refused(operator: NoteSigner, nodes: dict[str, NoteSigner]) -> None:
    note = sign_membership(_text(nodes, serial=6), operator)
    with pytest.raises(MembershipError, match="refusing a rollback"):
        load_membership(note, operator.verifier_key(), now=NOW, previous_serial=7)
    assert load_membership(note, operator.verifier_key(), now=NOW, previous_serial=6).serial == 6


def _with_line(nodes: dict[str, NoteSigner], line: str) -> str:
    return _text(nodes) + line + "\n"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("member bank https://x.example KEY consumer", "line 9: duplicate member name 'bank'"),
        ("member other https://x.example BANKKEY consumer", "line 9: .*same key as 'bank'"),
        ("member x https://x.example KEY", "line 9: expected 'member <name>"),
        ("node x https://x.example KEY consumer", "line 9: expected 'member <name>"),
        ("member X https://x.example KEY consumer", "line 9: member name 'X'"),
        ("member x ftp://x.example KEY consumer", "line 9: base URL .* must be absolute http"),
        ("member x https://x.example/?a=1 KEY consumer", "line 9: .*query"),
        ("member x https://x.example not+a+key consumer", "line 9: .*verifier key"),
        ("member x https://x.example KEY consumer,consumer", "line 9: roles"),
        ("member x https://x.example KEY Consumer", "line 9: roles"),
        ("", "line 9: expected 'member"),
        # another member's key name: its notes would pass for the bank's
        ("member x https://x.example OTHERKEY consumer", "line 9: .*not 'dataspace/x'"),
    ],
)
def test_malformed_member_line_is_refused_naming_the_line(
    operator: NoteSigner, nodes: dict[str, NoteSigner], line: str, reason: str
) -> None:
    line = line.replace("BANKKEY", nodes["bank"].verifier_key())
    line = line.replace("OTHERKEY", _signer("dataspace/y").verifier_key())
    line = line.replace("KEY", _signer("dataspace/x").verifier_key())
    note = sign_note(_with_line(nodes, line), [operator])
    with pytest.raises(MembershipError, match=reason):
        load_membership(note, operator.verifier_key(), now=NOW)


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ("dataspace membership v1", "dataspace membership v2", "line 1"),
        ("serial 7", "serial -7", "line 3: serial"),
        ("serial 7", "serial seven", "line 3: serial"),
        ("space finance-pilot", "space  finance", "line 2"),
        ("issued 2026-01-01T00:00:00Z", "issued 2026-01-01", "line 4"),
        ("expires 2026-02-01T00:00:00Z", "expires 2026-02-30T00:00:00Z", "line 5: .*not a valid"),
        ("expires 2026-02-01T00:00:00Z", "expires 2025-02-01T00:00:00Z", "expires before"),
    ],
)
def test_malformed_header_is_refused(
    operator: NoteSigner, nodes: dict[str, NoteSigner], old: str, new: str, reason: str
) -> None:
    note = sign_note(_text(nodes).replace(old, new), [operator])
    with pytest.raises(MembershipError, match=reason):
        load_membership(note, operator.verifier_key(), now=NOW)


def test_build_refuses_what_load_would_refuse(nodes: dict[str, NoteSigner]) -> None:
    twice = [*_members(nodes), _members(nodes)[0]]
    with pytest.raises(MembershipError, match="duplicate member name"):
        build_membership("s", 1, twice, issued=ISSUED, expires=EXPIRES)
    with pytest.raises(MembershipError, match="timezone-aware"):
        build_membership("s", 1, [], issued=datetime(2026, 1, 1), expires=EXPIRES)


def test_rotation_by_a_higher_serial(operator: NoteSigner, nodes: dict[str, NoteSigner]) -> None:
    old = load_membership(sign_membership(_text(nodes), operator), operator.verifier_key(), now=NOW)
    rotated_key = _signer("dataspace/bank")
    members = [
        Member("bank", "https://bank.example", rotated_key.verifier_key(), ("consumer",)),
        *_members(nodes)[1:],
    ]
    text = build_membership("finance-pilot", 8, members, issued=NOW, expires=EXPIRES)
    new = load_membership(
        sign_membership(text, operator), operator.verifier_key(), now=NOW, previous_serial=7
    )
    assert old.by_key_id(http_key_id(nodes["bank"])) is not None
    assert new.by_key_id(http_key_id(nodes["bank"])) is None  # the old key no longer talks
    assert new.require_member(http_key_id(rotated_key)).name == "bank"
