"""RFC 9421 HTTP Message Signatures over requests, Ed25519 only (``alg="ed25519"``).

Pure: no HTTP library, no clock of its own, no store. A request is a method, a URL, a header
mapping and the body bytes. The dataspace profile (see docs/peers.md):

* covered components, in this order: ``@method``, ``@target-uri``, ``content-type`` (when the
  request has one) and ``content-digest`` (when it has a body; RFC 9530 sha-256);
* signature parameters ``created``, ``expires``, ``nonce``, ``keyid``, ``alg="ed25519"``,
  ``tag="dataspace"``; label ``sig1``.

Verification follows RFC 9421 §3.2; each check below carries the step it implements, and every
failure raises :class:`RequestSignatureError` (a :class:`~dataspace.errors.SignatureError`)
naming the reason. Nothing here returns a bool. Replay protection (the nonce) is the caller's
second step, after the signature verified: see :mod:`dataspace.identity.replay`.

Just enough RFC 8941 (structured fields) for ``Signature-Input`` and ``Signature`` lives in
:mod:`dataspace.identity.sfv`; its names are re-exported here.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn, Protocol
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dataspace.errors import SignatureError
from dataspace.identity import sfv
from dataspace.identity.digest import content_digest, verify_content_digest
from dataspace.identity.sfv import MAX_COMPONENTS as MAX_COMPONENTS
from dataspace.identity.sfv import MAX_FIELD_LENGTH as MAX_FIELD_LENGTH
from dataspace.identity.sfv import BareItem as BareItem
from dataspace.identity.sfv import InnerList as InnerList
from dataspace.identity.sfv import Item as Item
from dataspace.identity.sfv import Params as Params
from dataspace.identity.sfv import Token as Token
from dataspace.identity.sfv import serialize_bare_item as serialize_bare_item
from dataspace.identity.sfv import serialize_inner_list as serialize_inner_list
from dataspace.identity.sfv import serialize_params as serialize_params

ALG = "ed25519"
TAG = "dataspace"
LABEL = "sig1"
DEFAULT_MAX_SKEW = 30  # seconds a signature's `created` may lie in the future
DEFAULT_MAX_AGE = 300  # seconds after `created` a signature is still accepted
DEFAULT_LIFETIME = 60  # seconds from `created` to `expires` that signers write
NONCE_RE = re.compile(r"^[A-Za-z0-9_\-]{16,128}$")
DERIVED = frozenset(
    {"@method", "@target-uri", "@authority", "@scheme", "@request-target", "@path", "@query"}
)

# ---------------------------------------------------------------------------------------------
# errors


class RequestSignatureError(SignatureError):
    """A signed HTTP request does not verify; answered with 401."""

    code = "invalid_request_signature"
    http_status = 401


def _fail(reason: str, hint: str | None = None) -> NoReturn:
    raise RequestSignatureError(reason, hint=hint)


def parse_dictionary(value: str, what: str) -> dict[str, Item | InnerList]:
    """Parse an RFC 8941 dictionary field value (raises :class:`RequestSignatureError`)."""
    try:
        return sfv.parse_dictionary(value, what)
    except sfv.FieldError as exc:
        raise RequestSignatureError(str(exc)) from None


# ---------------------------------------------------------------------------------------------
# components and the signature base (RFC 9421 §2)


Headers = Mapping[str, str] | Iterable[tuple[str, str]]


def normalize_headers(headers: Headers) -> dict[str, str]:
    """Lower-case names; several lines of one field joined with ", " (RFC 9421 §2.1)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        value = value.strip(" \t")
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _url_parts(url: str) -> tuple[str, str, str, str]:
    """(scheme, authority, path, query) with scheme and host lower-cased, default port dropped.
    A fragment is refused, not dropped: two URLs differing after a '#' would sign alike."""
    if "#" in url:
        _fail(f"request URL {url[:200]!r} has a fragment")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        _fail(f"request URL {url[:200]!r} is malformed")
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if not scheme or not host:
        _fail(f"request URL {url[:200]!r} is not absolute")
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(scheme)
    authority = host if port is None or port == default else f"{host}:{port}"
    return scheme, authority, parts.path or "/", parts.query


def target_uri(url: str) -> str:
    """The ``@target-uri`` value this profile signs: the absolute URL, normalised."""
    scheme, authority, path, query = _url_parts(url)
    return f"{scheme}://{authority}{path}" + (f"?{query}" if query else "")


def component_value(name: str, method: str, url: str, headers: Mapping[str, str]) -> str:
    """The value of one covered component (RFC 9421 §2.1, §2.2)."""
    if name.startswith("@"):
        scheme, authority, path, query = _url_parts(url)
        values = {
            "@method": method.upper(),
            "@target-uri": target_uri(url),
            "@authority": authority,
            "@scheme": scheme,
            "@path": path,
            "@query": f"?{query}",
            "@request-target": path + (f"?{query}" if query else ""),
        }
        if name not in values:
            _fail(f"derived component {name!r} is not supported")
        value = values[name]
    else:
        if name not in headers:
            _fail(
                f"covered component {name!r} is missing from the request",
                hint="a header the signature covers was removed in transit",
            )
        value = headers[name]
    if "\n" in value or "\r" in value:
        _fail(f"component {name!r} contains a line break")
    if not value.isascii():  # the signature base is ASCII (RFC 9421 §2.5)
        _fail(f"component {name!r} is not ASCII")
    return value


def signature_base(
    method: str, url: str, headers: Headers, components: Iterable[str], params: Params
) -> bytes:
    """The exact signature base of RFC 9421 §2.5 for a request."""
    hdrs = normalize_headers(headers)
    names = list(components)
    lines = [
        f"{serialize_bare_item(name)}: {component_value(name, method, url, hdrs)}" for name in names
    ]
    sig_params = serialize_inner_list(InnerList(tuple(Item(n) for n in names), params))
    lines.append(f'"@signature-params": {sig_params}')
    return "\n".join(lines).encode("ascii", errors="strict")


# ---------------------------------------------------------------------------------------------
# signing


class Signer(Protocol):
    """Anything that signs bytes with Ed25519: a private key or a :class:`NoteSigner`."""

    def sign(self, data: bytes, /) -> bytes: ...


def new_nonce() -> str:
    """128 random bits from :mod:`secrets`, URL-safe base64 (22 characters)."""
    return secrets.token_urlsafe(16)


def _epoch(now: datetime | float | int) -> int:
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        return int(now.timestamp())
    return int(now)


def sign_request(
    method: str,
    url: str,
    headers: Headers,
    body: bytes,
    *,
    signer: Signer,
    keyid: str,
    now: datetime | float | int,
    lifetime: int = DEFAULT_LIFETIME,
    nonce: str | None = None,
    tag: str = TAG,
    label: str = LABEL,
) -> dict[str, str]:
    """Sign a request under the dataspace profile; returns the headers to add to it.

    The result holds ``Signature-Input`` and ``Signature``, and ``Content-Digest`` when there is
    a body (any ``Content-Digest`` the caller set is replaced by the digest of ``body``).
    """
    hdrs = normalize_headers(headers)
    added: dict[str, str] = {}
    components = ["@method", "@target-uri"]
    if "content-type" in hdrs:
        components.append("content-type")
    if body:
        added["Content-Digest"] = hdrs["content-digest"] = content_digest(body)
        components.append("content-digest")
    created = _epoch(now)
    params: Params = {
        "created": created,
        "expires": created + lifetime,
        "nonce": nonce or new_nonce(),
        "keyid": keyid,
        "alg": ALG,
        "tag": tag,
    }
    base = signature_base(method, url, hdrs, components, params)
    signature = signer.sign(base)
    inner = InnerList(tuple(Item(c) for c in components), params)
    added["Signature-Input"] = f"{label}={serialize_inner_list(inner)}"
    added["Signature"] = f"{label}={serialize_bare_item(signature)}"
    return added


# ---------------------------------------------------------------------------------------------
# verifying (RFC 9421 §3.2)


@dataclass(frozen=True)
class Profile:
    """What a verifier demands. The defaults are the dataspace profile."""

    label: str = LABEL
    tag: str | None = TAG  # None: any tag, or none
    max_skew: int = DEFAULT_MAX_SKEW
    max_age: int | None = DEFAULT_MAX_AGE
    require_expires: bool = True
    require_nonce: bool = True
    require_alg: bool = True
    require_target: bool = True  # @target-uri, or @authority + @path + @query
    require_body_digest: bool = True  # content-digest covered when there is a body
    require_content_type: bool = True  # content-type covered when the request has one
    required: tuple[str, ...] = ("@method",)


DATASPACE_PROFILE = Profile()


@dataclass(frozen=True)
class VerifiedSignature:
    """A signature that verified: who signed, when, and what it covered."""

    label: str
    keyid: str
    components: tuple[str, ...]
    created: int
    expires: int | None
    nonce: str | None
    tag: str | None

    def valid_until(self, profile: Profile = DATASPACE_PROFILE) -> int:
        """Last second at which this signature is still accepted (for replay caches)."""
        ends = [self.expires] if self.expires is not None else []
        if profile.max_age is not None:
            ends.append(self.created + profile.max_age)
        return min(ends) if ends else self.created + DEFAULT_MAX_AGE


KeyResolver = Callable[[str], Ed25519PublicKey | None]


def _str_param(params: Params, name: str) -> str | None:
    if name not in params:
        return None
    value = params[name]
    if not isinstance(value, str):
        _fail(f"signature parameter {name!r} must be a string")
    return value


def _int_param(params: Params, name: str) -> int | None:
    if name not in params:
        return None
    value = params[name]
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"signature parameter {name!r} must be an integer")
    return value


def verify_request(
    method: str,
    url: str,
    headers: Headers,
    body: bytes | None,
    *,
    resolve_key: KeyResolver,
    now: datetime | float | int,
    profile: Profile = DATASPACE_PROFILE,
) -> VerifiedSignature:
    """Verify the request's signature under ``profile``; raise :class:`RequestSignatureError`.

    ``resolve_key`` maps a keyid to its Ed25519 public key, returning None (or raising, e.g.
    ``NotAMember``) for keys it does not know. ``body`` None: the body has not been read yet
    (a server checks who signed before it reads what may be a large body) — everything but
    the body is verified, and :func:`check_body` must pass before the body is trusted.
    """
    hdrs = normalize_headers(headers)
    label = profile.label
    # §3.2 step 1: parse Signature and Signature-Input; pick the label this profile uses
    if "signature-input" not in hdrs or "signature" not in hdrs:
        _fail(
            "request is not signed: Signature-Input or Signature header missing",
            hint="peers must sign every request (RFC 9421, see docs/peers.md)",
        )
    inputs = parse_dictionary(hdrs["signature-input"], "Signature-Input")
    signatures = parse_dictionary(hdrs["signature"], "Signature")
    sig_input = inputs.get(label)
    sig_value = signatures.get(label)
    if sig_input is None or sig_value is None:
        _fail(f"request carries no signature labelled {label!r}")
    if not isinstance(sig_input, InnerList):
        _fail(f"Signature-Input {label!r} is not an inner list")
    if not isinstance(sig_value, Item) or not isinstance(sig_value.value, bytes):
        _fail(f"Signature {label!r} is not a byte sequence")
    # §3.2 step 2: the covered components are plain, lower-case, unrepeated names
    components: list[str] = []
    for item in sig_input.items:
        name = item.value
        if not isinstance(name, str):
            _fail("a covered component identifier is not a string")
        if item.params:
            _fail(f"component parameters ({name!r};...) are not supported by this profile")
        if name != name.lower() or not name:
            _fail(f"component identifier {name!r} must be lower-case")
        if name in components:
            _fail(f"component {name!r} is covered twice")
        if name.startswith("@") and name not in DERIVED:
            _fail(f"derived component {name!r} is not supported")
        components.append(name)
    params = sig_input.params
    created = _int_param(params, "created")
    expires = _int_param(params, "expires")
    nonce = _str_param(params, "nonce")
    keyid = _str_param(params, "keyid")
    alg = _str_param(params, "alg")
    tag = _str_param(params, "tag")
    for key in params:
        if key not in ("created", "expires", "nonce", "keyid", "alg", "tag"):
            _fail(f"unknown signature parameter {key!r}")
    # §3.2 step 3: the profile's required components are covered
    covered = set(components)
    missing = [c for c in profile.required if c not in covered]
    if profile.require_target and "@target-uri" not in covered:
        missing += [c for c in ("@authority", "@path", "@query") if c not in covered]
    if profile.require_body_digest and body and "content-digest" not in covered:
        missing.append("content-digest")  # (an unread body: check_body asks again)
    if profile.require_content_type and "content-type" in hdrs and "content-type" not in covered:
        missing.append("content-type")
    if missing:
        _fail(
            f"signature does not cover required component(s): {', '.join(missing)}",
            hint="a covered component was dropped, or the signer does not follow the profile",
        )
    # §3.2 step 4: the profile's required parameters, alg and tag
    if keyid is None:
        _fail("signature has no keyid parameter")
    if created is None:
        _fail("signature has no created parameter")
    if profile.require_expires and expires is None:
        _fail("signature has no expires parameter")
    if profile.require_nonce and nonce is None:
        _fail("signature has no nonce parameter")
    if nonce is not None and not NONCE_RE.match(nonce):
        _fail("signature nonce must be 16-128 characters of [A-Za-z0-9_-]")
    if profile.require_alg and alg is None:
        _fail("signature has no alg parameter")
    if alg is not None and alg != ALG:
        _fail(f"signature algorithm {alg!r} is not accepted", hint='only alg="ed25519" is')
    if profile.tag is not None and tag != profile.tag:
        _fail(f"signature tag {tag!r} is not {profile.tag!r}")
    # §3.2 step 5: time — not from the future, not expired, not too old
    current = _epoch(now)
    if created > current + profile.max_skew:
        _fail(
            f"signature is created {created - current} s in the future "
            f"(allowed skew {profile.max_skew} s)",
            hint="check the signer's clock",
        )
    if expires is not None and expires < created:
        _fail("signature expires before it was created")
    if expires is not None and current > expires:
        _fail(f"signature expired {current - expires} s ago")
    if profile.max_age is not None and current - created > profile.max_age:
        _fail(f"signature is {current - created} s old (max age {profile.max_age} s)")
    # §3.2 step 6: resolve the key (unknown keyid fails here, before any crypto)
    public_key = resolve_key(keyid)
    if public_key is None:
        _fail(f"unknown keyid {keyid!r}", hint="the signer's key is not on the membership list")
    # §3.2 step 7-8: rebuild the signature base and verify the Ed25519 signature over it
    base = signature_base(method, url, hdrs, components, params)
    try:
        public_key.verify(sig_value.value, base)
    except InvalidSignature:
        _fail(
            f"signature by {keyid!r} does not verify",
            hint="the request was changed after signing, or signed by another key",
        )
    verified = VerifiedSignature(label, keyid, tuple(components), created, expires, nonce, tag)
    if body is not None:
        check_body(hdrs, body, verified, profile)
    return verified


def check_body(
    headers: Headers, body: bytes, verified: VerifiedSignature,
    profile: Profile = DATASPACE_PROFILE,
) -> None:
    """The body is bound through ``content-digest``: check it against the bytes received (and,
    under a profile that requires it, that a request with a body covers its digest)."""
    hdrs = normalize_headers(headers)
    covered = set(verified.components)
    if profile.require_body_digest and body and "content-digest" not in covered:
        _fail(
            "signature does not cover required component(s): content-digest",
            hint="a covered component was dropped, or the signer does not follow the profile",
        )
    if "content-digest" in covered:
        verify_content_digest(hdrs["content-digest"], body)
