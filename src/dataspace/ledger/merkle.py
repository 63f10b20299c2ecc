"""RFC 9162 §2.1 Merkle tree hashes, proofs and their verification. Pure: no I/O.

Proof *generation* works from a subtree-hash provider ``(level, index) -> bytes`` that returns
the hash of the complete subtree of ``2**level`` leaves starting at leaf ``index * 2**level``.
The store keeps exactly those hashes, so a proof over a million leaves needs O(log n) of them.
:func:`inclusion_subtrees` and :func:`consistency_subtrees` name the subtrees a proof needs, so
a caller can fetch them in one query and hand over a dict's ``__getitem__``.

Verification follows RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency) step by step;
a failed check raises :class:`ProofError` naming the step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from dataspace.errors import ProofError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

SubtreeProvider = Callable[[int, int], bytes]
Range = tuple[int, int]  # leaves [start, end)
Subtree = tuple[int, int]  # (level, index)


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes (RFC 9162 §2.1.1), iteratively."""
    if not leaf_hashes:
        return EMPTY_ROOT
    # Fold complete subtrees left to right, keeping the right edge as a stack.
    stack: list[tuple[int, bytes]] = []  # (level, hash)
    for h in leaf_hashes:
        level, cur = 0, h
        while stack and stack[-1][0] == level:
            cur = node_hash(stack.pop()[1], cur)
            level += 1
        stack.append((level, cur))
    return fold_right([h for _, h in stack])


def fold_right(hashes: Sequence[bytes]) -> bytes:
    """Hash of a right edge: complete subtrees in descending size, combined right to left."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def decompose(start: int, end: int) -> list[Subtree]:
    """The complete, aligned subtrees that make up leaves [start, end), largest first."""
    out: list[Subtree] = []
    while start < end:
        level = (start & -start).bit_length() - 1 if start else (end - start).bit_length() - 1
        while start + (1 << level) > end:
            level -= 1
        out.append((level, start >> level))
        start += 1 << level
    return out


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """Leaf ranges whose hashes form PATH(index, D[size]), bottom up (RFC 9162 §2.1.3.1)."""
    _check_index(index, size)
    out: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start += k
    out.reverse()
    return out


def consistency_ranges(size1: int, size2: int) -> list[Range]:
    """Leaf ranges whose hashes form PROOF(size1, D[size2]) (RFC 9162 §2.1.4.1)."""
    if not 0 < size1 <= size2:
        raise ProofError(
            f"no consistency proof from size {size1} to size {size2}",
            hint="need 0 < size1 <= size2",
        )
    out: list[Range] = []
    start, end, m, complete = 0, size2, size1, True
    while True:
        n = end - start
        if m == n:
            if not complete:
                out.append((start, end))
            break
        k = _split(n)
        if m <= k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m, complete = start + k, m - k, False
    out.reverse()
    return out


def subtrees_of(ranges: Sequence[Range]) -> list[Subtree]:
    """Every complete subtree the given ranges decompose into (for fetching in one query)."""
    seen: dict[Subtree, None] = {}
    for start, end in ranges:
        for sub in decompose(start, end):
            seen[sub] = None
    return list(seen)


def inclusion_subtrees(index: int, size: int) -> list[Subtree]:
    return subtrees_of(inclusion_ranges(index, size))


def consistency_subtrees(size1: int, size2: int) -> list[Subtree]:
    return subtrees_of(consistency_ranges(size1, size2))


def root_subtrees(size: int) -> list[Subtree]:
    return decompose(0, size)


def range_hash(start: int, end: int, provider: SubtreeProvider) -> bytes:
    """MTH(D[start:end]) for a range of the RFC tree, from complete-subtree hashes."""
    if start == end:
        return EMPTY_ROOT
    return fold_right([provider(level, idx) for level, idx in decompose(start, end)])


def root(size: int, provider: SubtreeProvider) -> bytes:
    return range_hash(0, size, provider)


def inclusion_proof(index: int, size: int, provider: SubtreeProvider) -> list[bytes]:
    return [range_hash(s, e, provider) for s, e in inclusion_ranges(index, size)]


def consistency_proof(size1: int, size2: int, provider: SubtreeProvider) -> list[bytes]:
    return [range_hash(s, e, provider) for s, e in consistency_ranges(size1, size2)]


def _check_index(index: int, size: int) -> None:
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> None:
    """RFC 9162 §2.1.3.2: raise ProofError unless ``proof`` shows ``leaf`` at ``index``."""
    _check_hash(leaf, "leaf hash")
    _check_hash(root_hash, "root hash")
    for i, p in enumerate(proof):
        _check_hash(p, f"proof hash {i}")
    # 1. leaf_index must be below tree_size.
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not below tree size {size} "
                         "(RFC 9162 §2.1.3.2 step 1)")
    # 2.-3.
    fn, sn, r = index, size - 1, leaf
    # 4.
    for p in proof:
        if sn == 0:  # 4a
            raise ProofError("the inclusion proof is longer than the path from the entry to "
                             "the root (RFC 9162 §2.1.3.2 step 4a)")
        if fn & 1 or fn == sn:  # 4b
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1  # 4c
        sn >>= 1
    # 5.
    if sn != 0:
        raise ProofError("the inclusion proof is shorter than the path from the entry to the root "
                         "(RFC 9162 §2.1.3.2 step 5)")
    if r != root_hash:
        raise ProofError("the inclusion proof does not lead from the entry to the checkpoint's "
                         "root: the entry, the proof or the root was changed "
                         "(RFC 9162 §2.1.3.2 step 5)")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """RFC 9162 §2.1.4.2: raise ProofError unless tree ``size2`` extends tree ``size1``."""
    if size1 > size2:
        raise ProofError(f"size1 {size1} is greater than size2 {size2}: a log never shrinks")
    if size1 == 0:
        raise ProofError(
            "consistency with the empty tree proves nothing",
            hint="every tree extends the empty tree; compare from a non-empty checkpoint",
        )
    if size1 == size2:
        if proof:
            raise ProofError("sizes are equal, so the proof must be empty")
        if root1 != root2:
            raise ProofError("sizes are equal but the roots differ: the log forked")
        return
    _check_hash(root1, "root1")
    _check_hash(root2, "root2")
    for i, p in enumerate(proof):
        _check_hash(p, f"proof hash {i}")
    # 1.
    if not proof:
        raise ProofError("the consistency proof is empty (RFC 9162 §2.1.4.2 step 1)")
    path = list(proof)
    # 2.
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    # 3.
    fn, sn = size1 - 1, size2 - 1
    # 4.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5.
    fr = sr = path[0]
    # 6.
    for c in path[1:]:
        if sn == 0:  # 6a
            raise ProofError("the consistency proof is longer than the path to the root "
                             "(RFC 9162 §2.1.4.2 step 6a)")
        if fn & 1 or fn == sn:  # 6b
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1  # 6c
        sn >>= 1
    # 7.
    if sn != 0:
        raise ProofError("the consistency proof is shorter than the path to the root "
                         "(RFC 9162 §2.1.4.2 step 7)")
    if fr != root1:
        raise ProofError("the consistency proof does not lead to the older log's root: the "
                         "older log is not the one proven from (RFC 9162 §2.1.4.2 step 7)")
    if sr != root2:
        raise ProofError("the consistency proof does not lead to the newer log's root: the "
                         "newer log does not extend the older one unchanged "
                         "(RFC 9162 §2.1.4.2 step 7)")


class MemoryTree:
    """Complete-subtree hashes of an in-memory tree: a provider for tests and small logs."""

    def __init__(self, leaf_hashes: Sequence[bytes] = ()) -> None:
        self.levels: list[list[bytes]] = [[]]
        for h in leaf_hashes:
            self.append(h)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def append(self, leaf: bytes) -> None:
        self.levels[0].append(leaf)
        level = 0
        while len(self.levels[level]) % 2 == 0:
            row = self.levels[level]
            if level + 1 == len(self.levels):
                self.levels.append([])
            self.levels[level + 1].append(node_hash(row[-2], row[-1]))
            level += 1

    def subtree(self, level: int, index: int) -> bytes:
        if level >= len(self.levels) or index >= len(self.levels[level]):
            raise ProofError(f"subtree ({level}, {index}) is not complete in a tree of {self.size}")
        return self.levels[level][index]

    def root(self, size: int | None = None) -> bytes:
        return root(self.size if size is None else size, self.subtree)
