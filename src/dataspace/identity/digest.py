"""RFC 9530 ``Content-Digest``: the SHA-256 of a message body, as a structured-field dictionary.

A signed request covers its ``content-digest`` field (RFC 9421 §7.2.8), so the signature binds
the body without hashing it into the signature base. We send ``sha-256`` and accept ``sha-256``
or ``sha-512``; any other algorithm in the field is ignored (RFC 9530 §2), but at least one we
know must be present and every one we know must match.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

from dataspace.errors import SignatureError

ALGORITHMS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}
_MEMBER = re.compile(r"^([a-z*][a-z0-9_\-.*]*)=:([A-Za-z0-9+/=]*):$")


class DigestError(SignatureError):
    """The ``Content-Digest`` field is malformed or does not match the body."""

    code = "invalid_content_digest"
    http_status = 401


def content_digest(body: bytes, algorithm: str = "sha-256") -> str:
    """The ``Content-Digest`` field value for ``body``, e.g. ``sha-256=:X48E…=:``."""
    hasher = ALGORITHMS.get(algorithm)
    if hasher is None:
        raise DigestError(f"unsupported digest algorithm {algorithm!r}", hint="use sha-256")
    return f"{algorithm}=:{base64.b64encode(hasher(body).digest()).decode('ascii')}:"


def parse_content_digest(value: str) -> dict[str, bytes]:
    """Split a ``Content-Digest`` value into ``{algorithm: digest bytes}``."""
    found: dict[str, bytes] = {}
    for raw in value.split(","):
        member = raw.strip(" \t")
        match = _MEMBER.match(member)
        if match is None:
            raise DigestError(
                f"malformed Content-Digest member {member[:80]!r}",
                hint="expected algorithm=:base64:, e.g. sha-256=:…:",
            )
        try:
            found[match.group(1)] = base64.b64decode(match.group(2), validate=True)
        except (binascii.Error, ValueError):
            raise DigestError(f"Content-Digest {match.group(1)} is not valid base64") from None
    return found


def verify_content_digest(value: str, body: bytes) -> None:
    """Raise :class:`DigestError` unless ``value`` names a known digest that matches ``body``."""
    digests = parse_content_digest(value)
    known = [alg for alg in digests if alg in ALGORITHMS]
    if not known:
        raise DigestError(
            "Content-Digest names no supported algorithm",
            hint="send sha-256 (or sha-512)",
            algorithms=sorted(digests),
        )
    for alg in known:
        if not hmac.compare_digest(ALGORITHMS[alg](body).digest(), digests[alg]):
            raise DigestError(
                f"Content-Digest {alg} does not match the body",
                hint="the body was changed after it was digested and signed",
            )
