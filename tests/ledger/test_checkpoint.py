"""C2SP tlog-checkpoint bodies: Go's golden tree text, malformed bodies, signing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dataspace.errors import SignatureError, VerificationError
from dataspace.identity.note import NoteSigner, NoteVerifier
from dataspace.ledger import merkle
from dataspace.ledger.checkpoint import Checkpoint, open_checkpoint, peek_checkpoint

VECTORS_FILE = Path(__file__).resolve().parent.parent / "vectors" / "signed-note" / "vectors.json"
CASES: list[dict[str, Any]] = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))[
    "checkpoint_text"
]


@pytest.mark.parametrize("case", CASES, ids=[c["desc"][:40] for c in CASES])
def test_checkpoint_vector(case: dict[str, Any]) -> None:
    if not case["valid"]:
        with pytest.raises(VerificationError):
            Checkpoint.parse(case["text"])
        return
    cp = Checkpoint.parse(case["text"])
    assert (cp.origin, cp.size) == (case["origin"], case["size"])
    assert cp.root == merkle.leaf_hash(case["root_is_leaf_hash_of"].encode())
    assert cp.format() == case["text"]


ROOT = merkle.leaf_hash(b"x")


def test_extension_lines_round_trip() -> None:
    cp = Checkpoint("example.com/log", 7, ROOT, ("ext one", "ext two"))
    assert Checkpoint.parse(cp.format()) == cp


@pytest.mark.parametrize(
    "text",
    [
        "o\n007\n" + Checkpoint("o", 7, ROOT).format().split("\n")[2] + "\n",
        "o\n-1\n" + Checkpoint("o", 7, ROOT).format().split("\n")[2] + "\n",
        "o\n7\n",
        "\n7\n" + Checkpoint("o", 7, ROOT).format().split("\n")[2] + "\n",
        Checkpoint("o", 7, ROOT).format()[:-1],
        Checkpoint("o", 7, ROOT).format() + "\n",
        "o\n7\n" + "AAAA\n",
        "o\n18446744073709551616\n" + Checkpoint("o", 7, ROOT).format().split("\n")[2] + "\n",
        "o\n" + "9" * 5000 + "\n" + Checkpoint("o", 7, ROOT).format().split("\n")[2] + "\n",
    ],
    ids=[
        "leading-zeros",
        "negative",
        "no-root",
        "empty-origin",
        "no-final-newline",
        "empty-extension-line",
        "short-root",
        "size-over-uint64",
        "size-of-5000-digits",
    ],
)
def test_malformed_checkpoint_is_rejected(text: str) -> None:
    with pytest.raises(VerificationError):
        Checkpoint.parse(text)


def test_signed_checkpoint_opens_with_the_log_key(signer: NoteSigner) -> None:
    note = Checkpoint(signer.name, 3, ROOT).sign([signer])
    opened = open_checkpoint(note, [NoteVerifier.parse(signer.verifier_key())])
    assert opened.checkpoint == Checkpoint(signer.name, 3, ROOT)
    assert opened.verified_by == [signer.name]
    assert peek_checkpoint(note).size == 3


def test_checkpoint_signed_by_another_key_is_rejected(
    signer: NoteSigner, impostor: NoteSigner
) -> None:
    note = Checkpoint(signer.name, 3, ROOT).sign([impostor])
    with pytest.raises(SignatureError):
        open_checkpoint(note, [signer.verifier()])
