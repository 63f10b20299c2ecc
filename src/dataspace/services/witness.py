"""Witnessing: members cosign each other's checkpoints, so no node can show two histories.

A node's ledger is append-only only if someone outside it remembers what it signed. A
*witness* (any other member of the space) keeps, per log, the largest checkpoint it cosigned,
and cosigns a newer one only with a consistency proof from that one (the C2SP tlog-witness
rule; here over the signed peer requests). A log that forks its history — or shows one
history to some peers and another to others — cannot get the fork cosigned by a witness that
saw the other branch. A verifier that requires cosignatures from witnesses it trusts
(``verify-proof --witness``) therefore checks a history that every one of them saw extend
without changes.

* :func:`add_checkpoint` — the witness's side: ``POST /peer/v1/witness/add-checkpoint``.
* :func:`request_cosignatures` — the log's side (``dataspace ledger witness``): send the
  latest checkpoint to witnesses, prove consistency from what each last cosigned, and store
  the cosignature lines on the checkpoint note.

Threat model: a witness is trusted not to collude with the log it witnesses; a log that
controls every witness a verifier requires can still fork. A witness that lost its state
starts over (trust on first use) — it then vouches only for what it saw since.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from dataspace.errors import (
    Conflict,
    DataspaceError,
    Forbidden,
    InputError,
    ProofError,
    SignatureError,
    UsageError,
)
from dataspace.identity.membership import Member
from dataspace.identity.note import MAX_SIGNATURES, b64encode, parse_note, strict_b64decode
from dataspace.ledger import log, merkle
from dataspace.ledger.checkpoint import open_checkpoint, peek_checkpoint
from dataspace.ledger.cosignature import CosignatureVerifier, Cosigner
from dataspace.services import ledger, space
from dataspace.services.node import Node
from dataspace.store.models import LedgerCheckpoint, WitnessedLog

ADD_CHECKPOINT_PATH = "/peer/v1/witness/add-checkpoint"
COSIGNED_ACTION = "witness.cosigned"  # the witness's ledger entry for each cosignature
# ... and for each checkpoint it refused for want of a consistent history: the evidence
REFUSED_ACTION = "witness.refused"
MAX_PROOF = 64  # hashes in a consistency proof of any tree of up to 2^63 entries


def add_checkpoint(node: Node, caller: Member, body: Any) -> dict[str, Any]:
    """As a witness: cosign ``caller``'s checkpoint if it extends the last one cosigned.

    ``body``: ``{"old_size": n, "proof": [base64 hash, ...], "checkpoint": note}``, where ``n``
    is the size this witness last cosigned for the caller's log (0 the first time). A wrong
    ``n`` is a :class:`Conflict` (409) whose details carry the right one, so the caller can
    prove from there; a proof that does not verify is refused and nothing is cosigned."""
    old_size, proof, note = _request(body)
    refused: ProofError | None = None
    signed = open_checkpoint(note, [caller.verifier])
    cp = signed.checkpoint
    if cp.origin != log_origin(caller.name):
        raise Forbidden(
            f"the checkpoint is of log {cp.origin!r}, not of {caller.name}'s log "
            f"({log_origin(caller.name)})",
            hint="a member submits its own log's checkpoints",
        )
    with node.store.write() as session:
        row = session.get(WitnessedLog, cp.origin, with_for_update=True)
        if row is not None and row.member != caller.name:
            raise Forbidden(f"log {cp.origin!r} is witnessed here for {row.member}")
        known = 0 if row is None else int(row.size)
        if old_size != known:
            raise Conflict(
                f"this witness last cosigned {caller.name}'s log at size {known}, not {old_size}",
                hint="prove consistency from that size",
                size=known,
            )
        if cp.size < known:
            raise Conflict(f"the checkpoint (size {cp.size}) is older than the one cosigned "
                           f"({known}): a log does not shrink", size=known)
        if known > 0:
            assert row is not None
            try:
                merkle.verify_consistency(known, cp.size, proof, bytes(row.root_hash), cp.root)
            except ProofError as exc:  # entered (the evidence) and committed, then refused
                refused = exc
                log.append(session, actor=f"peer:{caller.name}", action=REFUSED_ACTION, payload={
                    "log": cp.origin, "member": caller.name, "reason": exc.message,
                    "forked": known == cp.size,  # one size, two signed roots
                    "cosigned_size": known, "cosigned_root": b64encode(bytes(row.root_hash)),
                    "size": cp.size, "root": b64encode(cp.root), "checkpoint": note,
                })
        elif proof:  # from the empty tree (or none seen) there is nothing to prove
            raise InputError("a checkpoint extending the empty tree needs no consistency proof")
        if refused is None:
            if row is not None:
                row.size, row.root_hash, row.updated_at = cp.size, cp.root, datetime.now(UTC)
            else:
                session.add(WitnessedLog(origin=cp.origin, member=caller.name, size=cp.size,
                                         root_hash=cp.root, updated_at=datetime.now(UTC)))
            timestamp = int(time.time())
            line = Cosigner(node.signer).cosign(cp.format(), timestamp)
            log.append(
                session,
                actor=f"peer:{caller.name}",
                action=COSIGNED_ACTION,
                payload={"log": cp.origin, "member": caller.name, "old_size": known,
                         "size": cp.size, "root": b64encode(cp.root), "time": timestamp,
                         "checkpoint": note},
            )
    if refused is not None:
        raise refused
    return {"cosignature": line, "size": cp.size, "witness": node.name}


def _request(body: Any) -> tuple[int, list[bytes], str]:
    if not isinstance(body, Mapping):
        raise InputError("expected a JSON object with old_size, proof and checkpoint")
    old_size, proof, note = body.get("old_size"), body.get("proof", []), body.get("checkpoint")
    if not isinstance(old_size, int) or isinstance(old_size, bool) or old_size < 0:
        raise InputError("old_size must be a non-negative integer")
    if not isinstance(note, str):
        raise InputError("checkpoint must be a signed note (a string)")
    if not isinstance(proof, list) or len(proof) > MAX_PROOF or not all(
        isinstance(h, str) for h in proof
    ):
        raise InputError(f"proof must be a list of at most {MAX_PROOF} base64 hashes")
    try:
        hashes = [strict_b64decode(h) for h in proof]
    except ValueError as exc:
        raise InputError(f"proof: {exc}") from None
    return old_size, hashes, note


def request_cosignatures(
    node: Node, witnesses: Sequence[str] | None = None, *, post: Any = None,
    note: str | None = None,
) -> dict[str, Any]:
    """As a log: have ``witnesses`` (default: every other member) cosign the latest checkpoint
    (or ``note``, one this node signed); store their lines on it. Returns the cosigned note
    and, per witness, its answer or why it did not cosign (a witness that is down does not
    stop the others)."""
    note = ledger.checkpoint(node) if note is None else note
    cp = peek_checkpoint(note)
    names = list(witnesses) if witnesses else [
        m.name for m in space.membership(node).members if m.name != node.name
    ]
    if not names:
        raise UsageError("no witness to ask: this node is the only member of its space")
    if node.name in names:
        raise UsageError("a node cannot witness its own log")
    check_members(node, names)
    send = post or _post
    lines: list[str] = []
    results: dict[str, Any] = {}
    for name in names:
        try:
            answer = _ask(node, name, cp.size, note, send)
        except DataspaceError as exc:
            results[name] = {"cosigned": False, "error": exc.message}
            continue
        lines.append(str(answer["cosignature"]))
        results[name] = {"cosigned": True}
    stored = _store(node, cp.size, lines) if lines else note
    return {"size": cp.size, "checkpoint": stored, "witnesses": results}


def check_members(node: Node, names: Sequence[str]) -> None:
    """Each of ``names`` is a member of this node's space: a misspelt witness is an error
    before anyone is asked, not one more witness that "did not cosign"."""
    members = [m.name for m in space.membership(node).members]
    strangers = [n for n in names if n not in members]
    if strangers:
        raise UsageError(
            f"not a member of this space: {', '.join(strangers)}",
            hint="witnesses are other members: " + (", ".join(
                m for m in members if m != node.name) or "this space has none"),
        )


def _ask(node: Node, witness: str, size: int, note: str, send: Any) -> Mapping[str, Any]:
    """Send the checkpoint, first as if the witness had none; on 409, prove from its size."""
    old = 0
    for _ in range(2):
        body = {"old_size": old, "proof": _proof(node, old, size), "checkpoint": note}
        status, answer = send(node, witness, body)
        if status == 200 and isinstance(answer, Mapping) and "cosignature" in answer:
            line = str(answer["cosignature"])
            _check_line(node, witness, note, line)
            return answer
        known = _known_size(answer) if status == 409 else None
        if known is None or known == old:
            raise Conflict(f"witness {witness} refused: {_message(answer)}")
        if known > size:
            raise Conflict(f"witness {witness} has cosigned size {known} of this log, beyond "
                           f"its size {size}: this log was rolled back")
        old = known
    raise Conflict(f"witness {witness} did not settle on a size to prove from")


def _proof(node: Node, old: int, size: int) -> list[str]:
    if old == 0 or old == size:
        return []
    with node.store.read() as session:
        hashes = log.consistency_proof(session, old, size)
    return [b64encode(h) for h in hashes]


def _check_line(node: Node, witness: str, note: str, line: str) -> None:
    """The witness's answer is exactly one cosignature line, by that witness's own key (its
    name and cosignature key ID, as the membership list gives its key), that verifies on this
    checkpoint's text alone and is not dated in the future."""
    member = space.member(node, witness)
    verifier = CosignatureVerifier(member.verifier.name, member.verifier.public_bytes)
    text = parse_note(note).text
    if not line.endswith("\n") or line.count("\n") != 1:
        raise Conflict(f"witness {witness} answered something other than one signature line")
    try:
        [sig] = parse_note(text + "\n" + line).signatures
        if (sig.name, sig.key_id) != (verifier.name, verifier.key_id):
            raise SignatureError(f"the line is not {verifier.name}'s cosignature")
        verifier.verify(text + "\n" + line, time.time())
    except (SignatureError, ValueError) as exc:
        raise Conflict(f"witness {witness} answered a bad cosignature: {exc}") from None


def _store(node: Node, size: int, lines: list[str]) -> str:
    """Put the new cosignatures (checked: each its witness's own) on the stored note. A
    newer line by a witness replaces its older one; the node's own signature and the other
    witnesses' lines stay; the note keeps within the signed-note limit of lines."""
    with node.store.write() as session:
        row = session.get(LedgerCheckpoint, size, with_for_update=True)
        assert row is not None  # ledger.checkpoint stored it
        parsed = parse_note(row.note)
        own, *others = parsed.signatures  # the node's own signature line comes first
        fresh = {(s.name, s.key_id) for line in lines
                 for s in parse_note(parsed.text + "\n" + line).signatures}
        kept = [s.line + "\n" for s in others if (s.name, s.key_id) not in fresh]
        room = MAX_SIGNATURES - 1 - len(lines)
        kept = kept[-room:] if room > 0 else []
        row.note = parsed.text + "\n" + own.line + "\n" + "".join(kept) + "".join(
            lines[: MAX_SIGNATURES - 1])
        return str(row.note)


def log_origin(member: str) -> str:
    """The origin line of a member's log (:attr:`Node.origin`)."""
    return f"dataspace/{member}"


def _post(node: Node, witness: str, body: Mapping[str, Any]) -> tuple[int, Any]:
    from dataspace.services.peers import peer_client

    try:
        with peer_client(node, witness, timeout=30.0) as client:
            response = client.post(ADD_CHECKPOINT_PATH, json=dict(body))
    except httpx.TransportError as exc:
        raise Conflict(f"witness {witness} did not answer ({type(exc).__name__})") from None
    try:
        answer = response.json()
    except json.JSONDecodeError:
        answer = response.text
    return response.status_code, answer


def _known_size(answer: Any) -> int | None:
    error = answer.get("error") if isinstance(answer, Mapping) else None
    details = error.get("details") if isinstance(error, Mapping) else None
    size = details.get("size") if isinstance(details, Mapping) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None


def _message(answer: Any) -> str:
    error = answer.get("error") if isinstance(answer, Mapping) else None
    if isinstance(error, Mapping) and isinstance(error.get("message"), str):
        return str(error["message"])
    return str(answer)[:200]
