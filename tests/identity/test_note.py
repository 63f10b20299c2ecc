"""C2SP signed notes: the spec's and Go's known answers, then every way a note can be bent."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dataspace.errors import SignatureError
from dataspace.identity.note import (
    NoteSigner,
    NoteVerifier,
    open_note,
    parse_note,
    sign_note,
)

VECTORS_FILE = Path(__file__).resolve().parent.parent / "vectors" / "signed-note" / "vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
NOTES = VECTORS["notes"]
GO_NOTE = NOTES[1]["note"]
GO_TEXT = NOTES[1]["text"]


def _verifier(name: str) -> NoteVerifier:
    return NoteVerifier.parse(VECTORS["verifier_keys"][name])


def _key(seed: str, name: str = "test.example/log") -> NoteSigner:
    return NoteSigner(
        name, Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest())
    )


@pytest.mark.parametrize("case", NOTES, ids=[n["desc"][:40] for n in NOTES])
def test_vector_notes_open(case: dict[str, Any]) -> None:
    opened = open_note(case["note"], [_verifier(v) for v in case["verify_with"]])
    assert opened.text == case["text"]
    assert opened.verified_by == case["verified_by"]


@pytest.mark.parametrize("name", sorted(VECTORS["verifier_keys"]))
def test_vector_verifier_keys_round_trip(name: str) -> None:
    vkey = VECTORS["verifier_keys"][name]
    assert NoteVerifier.parse(vkey).verifier_key() == vkey


def test_go_private_key_reproduces_gos_signature_line_byte_for_byte() -> None:
    signer = NoteSigner.parse(VECTORS["signer_keys"]["go_peter_neumann"])
    assert signer.verifier_key() == VECTORS["verifier_keys"]["go_peter_neumann"]
    note = sign_note(GO_TEXT, [signer])
    go_first_line = GO_NOTE.split("\n\n", 1)[1].split("\n")[0] + "\n"
    assert note == GO_TEXT + "\n" + go_first_line


def test_key_id_is_the_sha256_of_name_newline_alg_and_key() -> None:
    signer = _key("a")
    want = hashlib.sha256(b"test.example/log\n\x01" + signer.public_bytes).digest()[:4]
    assert signer.key_id == want
    assert signer.verifier_key().startswith(f"test.example/log+{want.hex()}+")


def test_sign_and_open_with_two_keys() -> None:
    a, b = _key("a", "alpha"), _key("b", "beta")
    note = sign_note("hello\nworld\n", [a, b])
    assert open_note(note, [a.verifier(), b.verifier()]).verified_by == ["alpha", "beta"]
    assert open_note(note, [b.verifier()]).verified_by == ["beta"]


def test_changed_text_is_rejected() -> None:
    bad = GO_NOTE.replace("cryptography", "cryptographY", 1)
    with pytest.raises(SignatureError, match="does not verify"):
        open_note(bad, [_verifier("go_peter_neumann")])


def test_changed_signature_is_rejected() -> None:
    text, sigs = GO_NOTE.split("\n\n", 1)
    line = sigs.split("\n")[0]
    name, b64 = line.rsplit(" ", 1)
    flipped = b64[:10] + ("A" if b64[10] != "A" else "B") + b64[11:]
    bad = text + "\n\n" + name + " " + flipped + "\n"
    with pytest.raises(SignatureError):
        open_note(bad, [_verifier("go_peter_neumann")])


def test_wrong_key_of_the_same_name_is_not_trusted() -> None:
    impostor = _key("impostor", "PeterNeumann")
    note = sign_note(GO_TEXT, [impostor])
    with pytest.raises(SignatureError, match="not signed by any known key") as info:
        open_note(note, [_verifier("go_peter_neumann")])
    given = _verifier("go_peter_neumann").key_id.hex()
    assert info.value.hint is not None
    assert info.value.hint.startswith(f"the name matches but the key does not (PeterNeumann: "
                                      f"key id {given} given, ")  # fmt: skip


def test_known_key_with_a_bad_signature_rejects_even_if_another_verifies() -> None:
    good = open_note(GO_NOTE, [_verifier("go_enoch_root")])
    assert good.verified_by == ["EnochRoot"]
    bad = GO_NOTE.replace("x08go/ZJkuBS9UG", "x08go/ZJkuBS9UH")
    with pytest.raises(SignatureError):
        open_note(bad, [_verifier("go_peter_neumann"), _verifier("go_enoch_root")])


def test_no_known_key_is_rejected() -> None:
    with pytest.raises(SignatureError, match="not signed by any known key") as info:
        open_note(GO_NOTE, [_verifier("c2sp_example")])
    assert info.value.hint is not None and info.value.hint.startswith("it is signed by: ")


@pytest.mark.parametrize(
    ("note", "reason"),
    [
        (GO_NOTE[:-1], "newline"),
        (GO_NOTE[: GO_NOTE.index("\n\n") + 2], "no signature lines"),
        (GO_TEXT, "no blank line"),
        (GO_TEXT + "\n" + "- PeterNeumann AAAA\n", "does not start"),
        (GO_TEXT + "\n" + "— PeterNeumann\n", "no signature"),
        (GO_TEXT + "\n" + "— PeterNeumann AAAA\n", "too short"),
        (GO_TEXT + "\n" + "— PeterNeumann not*base64\n", "base64"),
        (GO_TEXT + "\n" + "— Peter+Neumann AAAAAAAA\n", "'\\+'"),
        ("bell\x07\n\n— PeterNeumann AAAAAAAA\n", "control character"),
        (GO_TEXT + "\n" + "— PeterNeumann AAAAAAAA\n" * 101, "more than 100"),
    ],
    ids=[
        "truncated-final-newline",
        "truncated-signatures",
        "no-signature-block",
        "wrong-dash",
        "missing-signature",
        "short-signature",
        "bad-base64",
        "plus-in-name",
        "control-character",
        "too-many-signatures",
    ],
)
def test_malformed_note_is_rejected_with_a_reason(note: str, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        open_note(note, [_verifier("go_peter_neumann")])


def test_truncated_signature_line_is_rejected() -> None:
    cut = GO_NOTE[: GO_NOTE.index("\n— EnochRoot") - 20] + "\n"
    with pytest.raises(SignatureError):
        open_note(cut, [_verifier("go_peter_neumann")])


def test_repeated_signature_by_one_key_counts_once() -> None:
    signer = _key("a")
    note = sign_note("x\n", [signer, signer])
    assert open_note(note, [signer.verifier()]).verified_by == ["test.example/log"]


@pytest.mark.parametrize("forged_first", [False, True])
def test_a_forged_second_line_by_a_known_key_rejects_the_note(forged_first: bool) -> None:
    """The spec: a signature whose name and key ID match a known key must verify. A good
    line does not vouch for a bad one by the same key, before or after it."""
    signer = _key("a")
    good = sign_note("x\n", [signer])
    text, line = good.split("\n\n", 1)
    name, blob = line.rstrip("\n").removeprefix("\u2014 ").split(" ")
    raw = base64.b64decode(blob)
    forged = f"\u2014 {name} {base64.b64encode(raw[:4] + bytes(64)).decode()}\n"
    lines = [forged, line] if forged_first else [line, forged]
    with pytest.raises(SignatureError):
        open_note(f"{text}\n\n{''.join(lines)}", [signer.verifier()])


def test_parse_note_reads_without_verifying() -> None:
    parsed = parse_note(GO_NOTE)
    assert parsed.text == GO_TEXT
    assert [s.name for s in parsed.signatures] == ["PeterNeumann", "EnochRoot"]


@pytest.mark.parametrize("text", ["no newline", "", "tab\there\n"])
def test_sign_refuses_malformed_text(text: str) -> None:
    with pytest.raises(SignatureError):
        sign_note(text, [_key("a")])


@pytest.mark.parametrize("name", ["", "has space", "has+plus", "tab\tname", "nbsp\u00a0name"])
def test_names_with_whitespace_or_plus_are_refused(name: str) -> None:
    with pytest.raises(SignatureError):
        _key("a", name)


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong key ID
        "PeterNeumann+c74f20a3+AhpcLQcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # alg 0x02
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",  # short key
        "PeterNeumann+c74f20a3",
        "Other+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # name not in the ID
    ],
)
def test_malformed_verifier_keys_are_refused(vkey: str) -> None:
    with pytest.raises(SignatureError):
        NoteVerifier.parse(vkey)


def test_private_key_string_with_the_wrong_id_is_refused() -> None:
    good = VECTORS["signer_keys"]["go_peter_neumann"]
    with pytest.raises(SignatureError):
        NoteSigner.parse(good.replace("c74f20a3", "c74f20a4"))
