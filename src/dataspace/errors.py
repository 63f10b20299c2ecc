"""The one exception tree of dataspace.

Every error says what happened and what to do about it. Library exceptions (DuckDB,
SQLAlchemy, cryptography, pyarrow) are wrapped at the boundary where they occur.
The CLI catches :class:`DataspaceError` in one place and exits with ``exit_code``;
the HTTP API renders it as the one JSON error envelope with ``http_status``.

    DataspaceError
    ├── UsageError                 bad arguments or configuration given by the caller
    │   ├── NodeNotFound           no node at the given directory
    │   └── NodeExists             init over an existing node
    ├── InputError                 a file or value that cannot be accepted
    │   ├── UnreadableInput        empty, binary, unknown encoding, ragged rows, ...
    │   └── InvalidName            dataset names with separators, '..', control characters
    ├── NotFound                   a named thing (dataset, entry, token) does not exist
    ├── Conflict                   the name or state is taken (duplicate dataset name)
    ├── AuthError                  missing or wrong credentials
    │   └── Forbidden              right credentials, wrong role
    ├── VerificationError          a proof, signature or log does not verify
    │   ├── ProofError             inclusion / consistency proof rejected
    │   ├── SignatureError         signed note or key does not verify
    │   └── LedgerTampered         stored log rows disagree with the tree (carries index)
    └── StoreError                 the state database failed or is out of date

Packages keep their own subclasses next to the code that raises them:

    InputError ── policy.errors.PolicyError       a malformed policy or template call
               ├─ compute.errors.QueryRefused     SQL the checker or locked engine refused
               └─ compute.errors.QueryFailed      the engine could not run an accepted query
               └─ contracts.errors.ProtocolError  a DSP message that does not validate
                  └─ IllegalTransition            a message the process's state does not allow
    Forbidden ── policy.errors.PolicyDenied       the usage policy denies (carries the decision)
              ├─ privacy.errors.BudgetExhausted   the agreement's privacy budget is spent
              └─ identity.membership.NotAMember   a key not on the space's membership list
    SignatureError ── identity.httpsig.RequestSignatureError   a node-to-node request fails
                   ├─ identity.digest.DigestError                RFC 9421 / 9530 checks
                   └─ identity.replay.ReplayedRequest
    VerificationError ── identity.membership.MembershipError   a bad or stale membership list
                      └─ privacy.secagg.errors.ShareRejected   a garbled or misrouted share
    InputError ── privacy.psi.errors.PsiMessageRefused (InvalidPoint)   a bad PSI message
               ├─ privacy.secagg.errors.SecAggError   out of order, overflow, too few survivors
               └─ federated.errors.InvalidTrainingInput
    UsageError ── privacy.psi.errors.PsiConfigError (PsiUnavailable)
    federated.errors.FederatedError ── MpcProtocolError (TripleReused, MalformedMessage)
    services.mp_wire.MultipartyFailed            a multi-party job failed at some node
    services.mp_wire.PeerRefused                 a participant refused under its agreement
    services.catalog.DeliveryFailed              a peer could not be reached
    compute.errors.SandboxError                   QueryTimeout, QueryOutOfMemory,
                                                  ResultTooLarge, WorkerCrashed
"""

from __future__ import annotations

from typing import Any


class DataspaceError(Exception):
    """Root of every error this package raises on purpose."""

    code = "error"
    exit_code = 1
    http_status = 500
    default_hint: str | None = None  # what to do, when the raiser has nothing more precise

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        self.details = details

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.hint:
            body["hint"] = self.hint
        if self.details:
            body["details"] = self.details
        return body


class UsageError(DataspaceError):
    code = "usage"
    exit_code = 2
    http_status = 400


class NodeNotFound(UsageError):
    code = "node_not_found"


class NodeExists(UsageError):
    code = "node_exists"


class InputError(DataspaceError):
    code = "invalid_input"
    exit_code = 3
    http_status = 422


class UnreadableInput(InputError):
    code = "unreadable_input"


class InvalidName(InputError):
    code = "invalid_name"


class NotFound(DataspaceError):
    code = "not_found"
    exit_code = 4
    http_status = 404


class Conflict(DataspaceError):
    code = "conflict"
    exit_code = 5
    http_status = 409


class AuthError(DataspaceError):
    code = "unauthorized"
    exit_code = 6
    http_status = 401


class Forbidden(AuthError):
    code = "forbidden"
    http_status = 403


class VerificationError(DataspaceError):
    code = "verification_failed"
    exit_code = 7
    http_status = 422


class ProofError(VerificationError):
    code = "invalid_proof"
    default_hint = ("the proof was altered, or it is checked against another log's key or "
                    "checkpoint; get a fresh one from the node (`dataspace ledger prove` for an "
                    "entry, GET /api/v1/ledger/proofs/consistency?from=SIZE for consistency)")


class SignatureError(VerificationError):
    code = "invalid_signature"


class LedgerTampered(VerificationError):
    code = "ledger_tampered"


class StoreError(DataspaceError):
    code = "store_error"
    exit_code = 8
    http_status = 503
