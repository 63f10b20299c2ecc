"""Private set intersection: DH-PSI over X25519 / ristretto255, streaming and multi-core.

See docs/psi.md for the threat model and message flow. Public API:

* :class:`KeySpec`, :class:`Column`, :func:`normalize` — which columns form the key and how
  each kind is normalised;
* :class:`Initiator`, :class:`Responder` — the two parties, exchanging ``bytes`` messages;
  :func:`run_local` runs both in one process, :func:`run_chain` three or more;
* :class:`PsiResult` — what a party ends with (rows, size) per mode in :data:`MODES`;
* :class:`Engine` — the process pool that hashes and blinds in batches; :func:`shared_engine`
  the one a node reuses across jobs;
* :func:`rr22_available`, :func:`run_rr22` — the optional RR22 path through ``spu``.
"""

from dataspace.privacy.psi.batch import Batch, Engine, shared_engine
from dataspace.privacy.psi.errors import (
    InvalidPoint,
    PsiConfigError,
    PsiMessageRefused,
    PsiUnavailable,
)
from dataspace.privacy.psi.group import GROUPS, POINT_SIZE, Group, domain_prefix, group
from dataspace.privacy.psi.normalize import KINDS, Column, KeySpec, encode_key, normalize
from dataspace.privacy.psi.protocol import (
    MODES,
    Initiator,
    PsiResult,
    Responder,
    run_chain,
    run_local,
)
from dataspace.privacy.psi.rr22 import rr22_available, run_rr22

__all__ = [
    "GROUPS",
    "KINDS",
    "MODES",
    "POINT_SIZE",
    "Batch",
    "Column",
    "Engine",
    "Group",
    "Initiator",
    "InvalidPoint",
    "KeySpec",
    "PsiConfigError",
    "PsiMessageRefused",
    "PsiResult",
    "PsiUnavailable",
    "Responder",
    "domain_prefix",
    "encode_key",
    "group",
    "normalize",
    "rr22_available",
    "run_chain",
    "run_local",
    "run_rr22",
    "shared_engine",
]
