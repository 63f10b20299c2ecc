"""Signed node-to-node HTTP: the client side (an httpx ``Auth``) and the server-side check.

Client::

    auth = PeerAuth(node.signer)
    httpx.post(url, json=message, auth=auth)

Every outgoing request gets ``Content-Digest`` (when it has a body), ``Signature-Input`` and
``Signature`` under the dataspace profile of :mod:`dataspace.identity.httpsig`, with a fresh
128-bit nonce from :mod:`secrets`.

Server: :func:`verify_incoming` is framework-neutral. It verifies the signature with keys from
the membership list (a key not on it raises :class:`~dataspace.identity.membership.NotAMember`,
403), then remembers the nonce (a replay raises
:class:`~dataspace.identity.replay.ReplayedRequest`, 401), and returns the signing member.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from datetime import datetime
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dataspace.identity.httpsig import (
    DATASPACE_PROFILE,
    DEFAULT_LIFETIME,
    Headers,
    Profile,
    RequestSignatureError,
    Signer,
    VerifiedSignature,
    sign_request,
    verify_request,
)
from dataspace.identity.membership import Member, Membership, NotAMember, http_key_id
from dataspace.identity.note import NoteSigner
from dataspace.identity.replay import ReplayStore

_SIGNATURE_HEADERS = ("signature", "signature-input", "content-digest")


class PeerAuth(httpx.Auth):
    """Sign every request with the node's Ed25519 key (RFC 9421, dataspace profile)."""

    requires_request_body = True

    def __init__(
        self,
        signer: NoteSigner | Signer,
        keyid: str | None = None,
        *,
        lifetime: int = DEFAULT_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if keyid is None:
            if not isinstance(signer, NoteSigner):
                raise TypeError("pass keyid= when signing with a bare key")
            keyid = http_key_id(signer)
        self.signer = signer
        self.keyid = keyid
        self.lifetime = lifetime
        self.clock = clock

    def sign(self, request: httpx.Request) -> None:
        """Add Content-Digest, Signature-Input and Signature to ``request`` in place."""
        for name in _SIGNATURE_HEADERS:
            request.headers.pop(name, None)
        added = sign_request(
            request.method,
            str(request.url),
            request.headers.multi_items(),
            request.content,
            signer=self.signer,
            keyid=self.keyid,
            now=self.clock(),
            lifetime=self.lifetime,
        )
        request.headers.update(added)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.sign(request)
        yield request


def verify_incoming(
    method: str,
    url: str,
    headers: Headers,
    body: bytes,
    membership: Membership,
    replay_store: ReplayStore,
    now: datetime | float,
    *,
    receiver: str,
    profile: Profile = DATASPACE_PROFILE,
) -> Member:
    """Authenticate a peer's request, body included; see :func:`authenticate`."""
    member, _ = authenticate(method, url, headers, body, membership, replay_store, now,
                             receiver=receiver, profile=profile)
    return member


def authenticate(
    method: str,
    url: str,
    headers: Headers,
    body: bytes | None,
    membership: Membership,
    replay_store: ReplayStore,
    now: datetime | float,
    *,
    receiver: str,
    profile: Profile = DATASPACE_PROFILE,
) -> tuple[Member, VerifiedSignature]:
    """Authenticate a peer's request; return the member that signed it.

    ``url`` is the absolute URL the peer addressed (scheme, Host, raw path and query), ``body``
    the raw bytes received (None: not read yet — then
    :func:`~dataspace.identity.httpsig.check_body` must pass once it is), ``receiver`` this
    node's name on the list: the request must be
    addressed to that member's URL (scheme, host and port), or a copy of a request signed for
    another node — each node's nonces are its own — would pass here too. Raises
    :class:`~dataspace.identity.httpsig.RequestSignatureError` (401) for a request addressed
    elsewhere or a missing, malformed, expired, forged or tampered signature,
    :class:`~dataspace.identity.replay.ReplayedRequest` (401) for a replay, and
    :class:`~dataspace.identity.membership.NotAMember` (403) for a key not on the list (or a
    receiver that is not).
    """
    me = membership.by_name(receiver)
    if me is None:
        raise NotAMember(
            f"{receiver} is not on its space's membership list, so no peer can address it",
            hint="the operator adds this node to the list; then `dataspace space join`",
        )
    if _origin(url) != _origin(me.url):
        raise RequestSignatureError(
            f"the request was addressed to {_origin_text(url)}, not to this node "
            f"({_origin_text(me.url)})",
            hint="sign requests for the URL the membership list gives the receiver",
        )
    signers: dict[str, Member] = {}

    def resolve(keyid: str) -> Ed25519PublicKey:
        member = membership.require_member(keyid)
        signers[keyid] = member
        return member.public_key

    verified = verify_request(
        method, url, headers, body, resolve_key=resolve, now=now, profile=profile
    )
    if verified.nonce is None:  # only with a profile that does not require nonces
        return signers[verified.keyid], verified
    replay_store.remember(
        verified.keyid,
        verified.nonce,
        expires_at=verified.valid_until(profile),
        now=int(now.timestamp()) if isinstance(now, datetime) else int(now),
    )
    return signers[verified.keyid], verified


def _origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port (the scheme's default if none is given), case-insensitively."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a bracketed host that is no IPv6 address, a port that is no number
        return url.split(":", 1)[0].lower(), "", -1
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme)


def _origin_text(url: str) -> str:
    scheme, host, port = _origin(url)
    return f"{scheme}://{host}:{port}"


_DEFAULT_PORTS = {"http": 80, "https": 443}
