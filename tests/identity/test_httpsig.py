"""RFC 9421 signatures: the RFC's Ed25519 known answer, then tampering named after the attack."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dataspace.errors import SignatureError
from dataspace.identity.digest import (
    DigestError,
    content_digest,
    parse_content_digest,
    verify_content_digest,
)
from dataspace.identity.httpsig import (
    InnerList,
    Profile,
    RequestSignatureError,
    parse_dictionary,
    serialize_inner_list,
    sign_request,
    signature_base,
    target_uri,
    verify_request,
)

# RFC 9421 Appendix B.1.4 (test-key-ed25519) and B.2.6 (signing a request using ed25519)
RFC_PRIVATE_KEY = "MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF"
RFC_PUBLIC_KEY = "MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs="
RFC_HEADERS = [
    ("Host", "example.com"),
    ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
    ("Content-Type", "application/json"),
    (
        "Content-Digest",
        "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyeal"
        "dVLvRwEmTHWXvJwew==:",
    ),
    ("Content-Length", "18"),
]
RFC_BODY = b'{"hello": "world"}'
RFC_URL = "https://example.com/foo?param=Value&Pet=dog"
RFC_SIGNATURE_INPUT = (
    'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)
RFC_SIGNATURE = (
    "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1"
    "u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:"
)
RFC_BASE = (
    '"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    '"@method": POST\n'
    '"@path": /foo\n'
    '"@authority": example.com\n'
    '"content-type": application/json\n'
    '"content-length": 18\n'
    '"@signature-params": ("date" "@method" "@path" "@authority" "content-type" '
    '"content-length");created=1618884473;keyid="test-key-ed25519"'
)
RFC_PROFILE = Profile(
    label="sig-b26",
    tag=None,
    max_age=None,
    require_expires=False,
    require_nonce=False,
    require_alg=False,
    require_target=False,
    require_body_digest=False,
    required=("@method", "@path", "@authority"),
)

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
URL = "https://tax.example:8443/dsp/negotiations/request?lang=zh&page=2"
BODY = b'{"@type": "ContractRequestMessage", "purpose": "credit-risk"}'
HEADERS = {"Content-Type": "application/json", "Host": "tax.example:8443"}


def _rfc_keys() -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    private = serialization.load_der_private_key(base64.b64decode(RFC_PRIVATE_KEY), None)
    public = serialization.load_der_public_key(base64.b64decode(RFC_PUBLIC_KEY))
    assert isinstance(private, Ed25519PrivateKey)
    assert isinstance(public, Ed25519PublicKey)
    return private, public


# --- RFC known answers ------------------------------------------------------------------------


def test_rfc9421_b26_signature_base_is_reproduced_exactly() -> None:
    parsed = parse_dictionary(RFC_SIGNATURE_INPUT, "Signature-Input")["sig-b26"]
    assert isinstance(parsed, InnerList)
    components = ["date", "@method", "@path", "@authority", "content-type", "content-length"]
    base = signature_base("POST", RFC_URL, RFC_HEADERS, components, parsed.params)
    assert base.decode() == RFC_BASE


def test_rfc9421_b26_signature_value_is_reproduced_with_the_rfc_key() -> None:
    private, public = _rfc_keys()
    assert private.public_key().public_bytes_raw() == public.public_bytes_raw()
    expected = base64.b64decode(RFC_SIGNATURE.split(":")[1])
    assert private.sign(RFC_BASE.encode()) == expected  # Ed25519 is deterministic


def test_rfc9421_b26_request_verifies_with_the_rfc_public_key() -> None:
    _, public = _rfc_keys()
    headers = [*RFC_HEADERS, ("Signature-Input", RFC_SIGNATURE_INPUT), ("Signature", RFC_SIGNATURE)]
    verified = verify_request(
        "POST",
        RFC_URL,
        headers,
        RFC_BODY,
        resolve_key={"test-key-ed25519": public}.get,
        now=1618884473 + 5,
        profile=RFC_PROFILE,
    )
    assert verified.keyid == "test-key-ed25519"
    assert verified.components[:2] == ("date", "@method")


def test_rfc9421_b26_changed_date_does_not_verify() -> None:
    _, public = _rfc_keys()
    headers = [
        (k, "Tue, 20 Apr 2021 02:07:56 GMT" if k == "Date" else v) for k, v in RFC_HEADERS
    ] + [("Signature-Input", RFC_SIGNATURE_INPUT), ("Signature", RFC_SIGNATURE)]
    with pytest.raises(SignatureError, match="does not verify"):
        verify_request(
            "POST",
            RFC_URL,
            headers,
            RFC_BODY,
            resolve_key={"test-key-ed25519": public}.get,
            now=1618884473,
            profile=RFC_PROFILE,
        )


def test_rfc9530_content_digest_of_the_rfc_example() -> None:
    assert content_digest(RFC_BODY) == "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    verify_content_digest(dict(RFC_HEADERS)["Content-Digest"], RFC_BODY)  # sha-512 accepted
    assert set(parse_content_digest(content_digest(b"", "sha-512"))) == {"sha-512"}


def test_content_digest_of_another_body_is_refused() -> None:
    with pytest.raises(DigestError, match="does not match"):
        verify_content_digest(content_digest(b"a"), b"b")
    with pytest.raises(DigestError, match="no supported algorithm"):
        verify_content_digest("md5=:AAAA:", b"")
    with pytest.raises(DigestError, match="malformed"):
        verify_content_digest("sha-256=X48E", b"")


def test_structured_fields_round_trip() -> None:
    value = '("@method" "a\\"b");created=1;keyid="k\\\\x";flag;tok=abc/d;b=:AAE=:;t=?0'
    parsed = parse_dictionary(f"sig1={value}, other=?1", "Signature-Input")
    inner = parsed["sig1"]
    assert isinstance(inner, InnerList)
    assert serialize_inner_list(inner) == value
    for bad in ("sig1=(", "sig1=1.5", 'sig1="x', "Sig1=1", "sig1=1,", "sig1=:!:", "sig1=1 2"):
        with pytest.raises(RequestSignatureError, match="malformed"):
            parse_dictionary(bad, "Signature-Input")


def test_target_uri_is_normalised() -> None:
    assert target_uri("HTTPS://Tax.Example:443/a?b=1") == "https://tax.example/a?b=1"
    assert target_uri("http://127.0.0.1:8080") == "http://127.0.0.1:8080/"


@pytest.mark.parametrize("url", ["https://tax.example/a#/b", "https://tax.example/a?b=1#",
                                 "https://tax.example#x"])
def test_a_url_with_a_fragment_is_refused_not_cut(url: str) -> None:
    """Dropped, the fragment would let two different URLs share one signature."""
    with pytest.raises(RequestSignatureError, match="fragment"):
        target_uri(url)


# --- the dataspace profile ----------------------------------------------------------------------


@pytest.fixture
def keys() -> dict[str, Ed25519PrivateKey]:
    return {"node-a": Ed25519PrivateKey.generate(), "node-b": Ed25519PrivateKey.generate()}


Resolver = Callable[[str], Ed25519PublicKey | None]


def _resolver(keys: dict[str, Ed25519PrivateKey]) -> Resolver:
    return {k: v.public_key() for k, v in keys.items()}.get


def _signed(
    keys: dict[str, Ed25519PrivateKey],
    *,
    keyid: str = "node-a",
    method: str = "POST",
    url: str = URL,
    body: bytes = BODY,
    now: int = NOW,
    headers: dict[str, str] | None = None,
) -> dict[str, str]:
    hdrs = dict(HEADERS if headers is None else headers)
    hdrs.update(sign_request(method, url, hdrs, body, signer=keys[keyid], keyid=keyid, now=now))
    return hdrs


def _verify(
    keys: dict[str, Ed25519PrivateKey],
    headers: dict[str, str],
    *,
    method: str = "POST",
    url: str = URL,
    body: bytes = BODY,
    now: int = NOW,
) -> str:
    return verify_request(method, url, headers, body, resolve_key=_resolver(keys), now=now).keyid


def test_signed_request_verifies(keys: dict[str, Ed25519PrivateKey]) -> None:
    headers = _signed(keys)
    assert headers["Signature-Input"].startswith(
        'sig1=("@method" "@target-uri" "content-type" "content-digest");created='
    )
    assert ';alg="ed25519";tag="dataspace"' in headers["Signature-Input"]
    assert _verify(keys, headers) == "node-a"
    lower = {k.lower(): v for k, v in headers.items()}  # header names are case-insensitive
    assert _verify(keys, lower, now=NOW + 59) == "node-a"


def test_bodyless_get_verifies_without_digest(keys: dict[str, Ed25519PrivateKey]) -> None:
    headers = _signed(keys, method="GET", body=b"", headers={})
    assert "Content-Digest" not in headers
    assert '("@method" "@target-uri")' in headers["Signature-Input"]
    assert _verify(keys, headers, method="GET", body=b"") == "node-a"


def test_changed_method_is_refused(keys: dict[str, Ed25519PrivateKey]) -> None:
    with pytest.raises(SignatureError, match="does not verify"):
        _verify(keys, _signed(keys), method="PUT")


def test_changed_path_is_refused(keys: dict[str, Ed25519PrivateKey]) -> None:
    with pytest.raises(SignatureError, match="does not verify"):
        _verify(keys, _signed(keys), url=URL.replace("/request", "/terminate"))


def test_changed_query_is_refused(keys: dict[str, Ed25519PrivateKey]) -> None:
    with pytest.raises(SignatureError, match="does not verify"):
        _verify(keys, _signed(keys), url=URL.replace("page=2", "page=3"))


def test_changed_host_is_refused(keys: dict[str, Ed25519PrivateKey]) -> None:
    with pytest.raises(SignatureError, match="does not verify"):
        _verify(keys, _signed(keys), url=URL.replace("tax.example", "grid.example"))


def test_changed_body_is_refused(keys: dict[str, Ed25519PrivateKey]) -> None:
    with pytest.raises(DigestError, match="does not match the body"):
        _verify(keys, _signed(keys), body=BODY.replace(b"credit-risk", b"marketing"))


def test_changed_body_with_matching_digest_header_is_refused(
    keys: dict[str, Ed25519PrivateKey],
) -> None:
    forged = BODY.replace(b"credit-risk", b"marketing")
    headers = _signed(keys)
    headers["Content-Digest"] = content_digest(forged)
    with pytest.raises(SignatureError, match="does not verify"):
        _verify(keys, headers, body=forged)


def test_stripped_body_and_digest_are_refused(keys: dict[str, Ed25519PrivateKey]) -> None:
    headers = _signed(keys)
    del headers["Content-Digest"]
    with pytest.raises(SignatureError, match="'content-digest' is missing"):
        _verify(keys, headers, body=b"")


def test_changed_content_type_is_refused(keys: dict[str, Ed25519PrivateKey]) -> None:
    headers = _signed(keys)
    headers["Content-Type"] = "text/plain"
    with pytest.raises(SignatureError, match="does not verify"):
        _verify(keys, headers)


def test_dropped_covered_component_is_refused(keys: dict[str, Ed25519PrivateKey]) -> None:
    headers = _signed(keys)
    headers["Signature-Input"] = headers["Signature-Input"].replace(' "content-digest"', "")
    with pytest.raises(SignatureError, match=r"does not cover required component.*content-digest"):
        _verify(keys, headers)
    headers = _signed(keys)
    headers["Signature-Input"] = headers["Signature-Input"].replace('"@target-uri" ', "")
    with pytest.raises(SignatureError, match="@authority, @path, @query"):
        _verify(keys, headers)


def test_non_ascii_covered_header_is_a_signature_error(keys: dict[str, Ed25519PrivateKey]) -> None:
    """Anyone can send one (the keyid is public): a clear refusal, not a crash."""
    for header, tail in (("Content-Type", "\xe9"), ("Content-Digest", "\u4e2d")):
        headers = _signed(keys)
        headers[header] += tail
        with pytest.raises(RequestSignatureError, match=f"{header.lower()}' is not ASCII"):
            _verify(keys, headers)


def test_uncovered_content_type_is_refused(keys: dict[str, Ed25519PrivateKey]) -> None:
    headers = _signed(keys, method="GET", body=b"", headers={})
    headers["Content-Type"] = "application/json"
    with pytest.raises(SignatureError, match="content-type"):
        _verify(keys, headers, method="GET", body=b"")


def test_expired_signature_is_refused(keys: dict[str, Ed25519PrivateKey]) -> None:
    with pytest.raises(SignatureError, match="expired 1 s ago"):
        _verify(keys, _signed(keys), now=NOW + 61)


def test_signature_older_than_max_age_is_refused(keys: dict[str, Ed25519PrivateKey]) -> None:
    headers = dict(HEADERS)
    headers.update(
        sign_request("POST", URL, headers, BODY, signer=keys["node-a"], keyid="node-a",
                     now=NOW, lifetime=3600)
    )  # fmt: skip
    with pytest.raises(SignatureError, match="max age 300"):
        _verify(keys, headers, now=NOW + 301)


def test_future_dated_signature_is_refused(keys: dict[str, Ed25519PrivateKey]) -> None:
    headers = _signed(keys, now=NOW + 31)
    with pytest.raises(SignatureError, match="31 s in the future"):
        _verify(keys, headers)
    assert _verify(keys, _signed(keys, now=NOW + 30)) == "node-a"  # within the allowed skew


def test_wrong_key_is_refused(keys: dict[str, Ed25519PrivateKey]) -> None:
    headers = _signed(keys)
    other = {"node-a": keys["node-b"], "node-b": keys["node-a"]}
    with pytest.raises(SignatureError, match="signature by 'node-a' does not verify"):
        _verify(other, headers)


def test_unknown_keyid_is_refused(keys: dict[str, Ed25519PrivateKey]) -> None:
    headers = _signed(keys)
    with pytest.raises(SignatureError, match="unknown keyid 'node-a'"):
        _verify({"node-b": keys["node-b"]}, headers)


def test_signature_of_another_node_replayed_with_changed_keyid_is_refused(
    keys: dict[str, Ed25519PrivateKey],
) -> None:
    headers = _signed(keys, keyid="node-b")
    headers["Signature-Input"] = headers["Signature-Input"].replace(
        'keyid="node-b"', 'keyid="node-a"'
    )
    with pytest.raises(SignatureError, match="signature by 'node-a' does not verify"):
        _verify(keys, headers)


def test_signature_moved_to_another_label_is_refused(keys: dict[str, Ed25519PrivateKey]) -> None:
    headers = _signed(keys)
    headers["Signature"] = headers["Signature"].replace("sig1=", "sig2=")
    with pytest.raises(SignatureError, match="no signature labelled 'sig1'"):
        _verify(keys, headers)


def test_unsigned_request_is_refused(keys: dict[str, Ed25519PrivateKey]) -> None:
    with pytest.raises(RequestSignatureError, match="not signed") as info:
        _verify(keys, dict(HEADERS))
    assert info.value.http_status == 401


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (';alg="ed25519"', ';alg="hmac-sha256"', "algorithm 'hmac-sha256' is not accepted"),
        (';alg="ed25519"', "", "no alg parameter"),
        (';tag="dataspace"', ';tag="other"', "tag 'other'"),
        (";nonce=", ";x=", "unknown signature parameter 'x'"),
        ('"@method"', '"@method";req', "component parameters"),
        ('"@method"', '"@Method"', "lower-case"),
        ('"@method"', '"@method" "@method"', "covered twice"),
        ('"@method"', '"@status"', "not supported"),
        (";created=", ";created=1.5;c=", "decimals"),
    ],
)
def test_malformed_or_foreign_signature_parameters_are_refused(
    keys: dict[str, Ed25519PrivateKey], old: str, new: str, reason: str
) -> None:
    headers = _signed(keys)
    assert old in headers["Signature-Input"]
    headers["Signature-Input"] = headers["Signature-Input"].replace(old, new, 1)
    with pytest.raises(RequestSignatureError, match=reason):
        _verify(keys, headers)
