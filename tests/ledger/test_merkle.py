"""RFC 9162 tree and proofs: every transparency-dev vector, then properties on random trees."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataspace.errors import ProofError
from dataspace.ledger import merkle

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "rfc9162"


def _files(kind: str) -> list[Path]:
    return sorted((VECTORS / kind).rglob("*.json"))


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _id(path: Path) -> str:
    return str(path.relative_to(VECTORS))


def test_vectors_are_present_and_licensed() -> None:
    assert (VECTORS / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert len(_files("inclusion")) > 50
    assert len(_files("consistency")) > 50


@pytest.mark.parametrize("path", _files("inclusion"), ids=_id)
def test_inclusion_vector(path: Path) -> None:
    v = _load(path)
    proof = [_b64(p) for p in v["proof"] or []]
    args = (_b64(v["leafHash"]), v["leafIdx"], v["treeSize"], proof, _b64(v["root"]))
    if v["wantErr"]:
        with pytest.raises(ProofError):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)


@pytest.mark.parametrize("path", _files("consistency"), ids=_id)
def test_consistency_vector(path: Path) -> None:
    v = _load(path)
    proof = [_b64(p) for p in v["proof"] or []]
    args = (v["size1"], v["size2"], proof, _b64(v["root1"]), _b64(v["root2"]))
    if v["wantErr"]:
        with pytest.raises(ProofError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)


# The RFC 9162 reference tree of 8 leaves (the one transparency-dev's vectors use).
RFC_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]


def test_generated_proofs_equal_the_vectors() -> None:
    tree = merkle.MemoryTree([merkle.leaf_hash(d) for d in RFC_LEAVES])
    happy = [_load(p) for p in _files("inclusion") if p.name == "happy-path.json"]
    happy = [v for v in happy if v["treeSize"] <= 8]
    assert happy
    for v in happy:
        proof = merkle.inclusion_proof(v["leafIdx"], v["treeSize"], tree.subtree)
        assert proof == [_b64(p) for p in v["proof"] or []]
        assert tree.root(v["treeSize"]) == _b64(v["root"])
    for path in _files("consistency"):
        v = _load(path)
        if path.name != "happy-path.json" or not 0 < v["size1"] < v["size2"] <= 8:
            continue
        proof = merkle.consistency_proof(v["size1"], v["size2"], tree.subtree)
        assert proof == [_b64(p) for p in v["proof"]]


def test_empty_tree_root_is_hash_of_nothing() -> None:
    assert merkle.root_of([]) == hashlib.sha256(b"").digest()
    assert merkle.MemoryTree().root() == merkle.EMPTY_ROOT


def test_failed_check_is_named_after_the_rfc_step() -> None:
    tree = merkle.MemoryTree([merkle.leaf_hash(bytes([i])) for i in range(5)])
    proof = merkle.inclusion_proof(1, 5, tree.subtree)
    with pytest.raises(ProofError, match=r"§2\.1\.3\.2 step 5"):
        merkle.verify_inclusion(merkle.leaf_hash(b"x"), 1, 5, proof, tree.root())
    with pytest.raises(ProofError, match=r"2\.1\.3\.2 step 1"):
        merkle.verify_inclusion(merkle.leaf_hash(b"x"), 5, 5, proof, tree.root())


# Reference implementation straight from the RFC's recursive definitions, on the leaf list.
def _mth(d: list[bytes]) -> bytes:
    if not d:
        return merkle.EMPTY_ROOT
    if len(d) == 1:
        return d[0]
    k = 1 << ((len(d) - 1).bit_length() - 1)
    return merkle.node_hash(_mth(d[:k]), _mth(d[k:]))


def _path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = 1 << ((len(d) - 1).bit_length() - 1)
    if m < k:
        return [*_path(m, d[:k]), _mth(d[k:])]
    return [*_path(m - k, d[k:]), _mth(d[:k])]


def _subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [_mth(d)]
    k = 1 << ((len(d) - 1).bit_length() - 1)
    if m <= k:
        return [*_subproof(m, d[:k], b), _mth(d[k:])]
    return [*_subproof(m - k, d[k:], False), _mth(d[:k])]


def _flip(value: bytes, bit: int) -> bytes:
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@st.composite
def _tree_and_index(draw: st.DrawFn) -> tuple[list[bytes], int, int]:
    size = draw(st.integers(min_value=1, max_value=70))
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    index = draw(st.integers(min_value=0, max_value=size - 1))
    return leaves, index, draw(st.integers(min_value=0, max_value=255))


@settings(max_examples=150, deadline=None)
@given(_tree_and_index())
def test_inclusion_proofs_from_the_provider_verify_and_match_the_rfc(
    case: tuple[list[bytes], int, int],
) -> None:
    leaves, index, bit = case
    size = len(leaves)
    tree = merkle.MemoryTree(leaves)
    root = tree.root()
    assert root == _mth(leaves) == merkle.root_of(leaves)
    proof = merkle.inclusion_proof(index, size, tree.subtree)
    assert proof == _path(index, leaves)
    merkle.verify_inclusion(leaves[index], index, size, proof, root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(_flip(leaves[index], bit), index, size, proof, root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(leaves[index], index, size, proof, _flip(root, bit))
    for i in range(len(proof)):
        bad = [*proof[:i], _flip(proof[i], bit), *proof[i + 1 :]]
        with pytest.raises(ProofError):
            merkle.verify_inclusion(leaves[index], index, size, bad, root)


@st.composite
def _two_sizes(draw: st.DrawFn) -> tuple[list[bytes], int, int]:
    size2 = draw(st.integers(min_value=1, max_value=70))
    size1 = draw(st.integers(min_value=1, max_value=size2))
    leaves = [merkle.leaf_hash(b"c" + i.to_bytes(4, "big")) for i in range(size2)]
    return leaves, size1, draw(st.integers(min_value=0, max_value=255))


@settings(max_examples=150, deadline=None)
@given(_two_sizes())
def test_consistency_proofs_from_the_provider_verify_and_match_the_rfc(
    case: tuple[list[bytes], int, int],
) -> None:
    leaves, size1, bit = case
    size2 = len(leaves)
    tree = merkle.MemoryTree(leaves)
    root1, root2 = tree.root(size1), tree.root()
    assert root1 == _mth(leaves[:size1])
    proof = merkle.consistency_proof(size1, size2, tree.subtree)
    assert proof == _subproof(size1, leaves, True)
    merkle.verify_consistency(size1, size2, proof, root1, root2)
    with pytest.raises(ProofError):
        merkle.verify_consistency(size1, size2, proof, _flip(root1, bit), root2)
    with pytest.raises(ProofError):
        merkle.verify_consistency(size1, size2, proof, root1, _flip(root2, bit))
    for i in range(len(proof)):
        bad = [*proof[:i], _flip(proof[i], bit), *proof[i + 1 :]]
        with pytest.raises(ProofError):
            merkle.verify_consistency(size1, size2, bad, root1, root2)


def test_subtree_lists_cover_exactly_what_the_proofs_read() -> None:
    tree = merkle.MemoryTree([merkle.leaf_hash(bytes([i])) for i in range(37)])
    for size in range(1, 38):
        for index in range(size):
            wanted = set(merkle.inclusion_subtrees(index, size))
            read: set[tuple[int, int]] = set()

            def spy(level: int, idx: int, read: set[tuple[int, int]] = read) -> bytes:
                read.add((level, idx))
                return tree.subtree(level, idx)

            merkle.inclusion_proof(index, size, spy)
            assert read == wanted
