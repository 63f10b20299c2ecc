"""Errors of private set intersection.

InputError ── PsiMessageRefused     a message out of order, replayed, truncated or foreign
              └─ InvalidPoint        a point that is not a valid group element
UsageError ── PsiConfigError         unknown mode, group or column kind; bad key spec
              └─ PsiUnavailable      an optional engine (spu / RR22) is not installed
DataspaceError ── PsiEngineFailed    an optional engine (RR22) stopped with an error
"""

from __future__ import annotations

from dataspace.errors import DataspaceError, InputError, UsageError

__all__ = [
    "InvalidPoint",
    "PsiConfigError",
    "PsiEngineFailed",
    "PsiMessageRefused",
    "PsiUnavailable",
]


class PsiMessageRefused(InputError):
    code = "psi_message_refused"


class InvalidPoint(PsiMessageRefused):
    code = "psi_invalid_point"


class PsiConfigError(UsageError):
    code = "psi_config"


class PsiUnavailable(PsiConfigError):
    code = "psi_unavailable"


class PsiEngineFailed(DataspaceError):
    code = "psi_engine_failed"
