from __future__ import annotations

import unicodedata
from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataspace.privacy.psi import KeySpec, PsiConfigError, encode_key, group, normalize
from dataspace.privacy.psi.normalize import _MOBILE, _SEPARATORS, _WIDTH, identifier_text


@pytest.mark.parametrize(
    ("raw", "kind", "want"),
    [
        ("９１１１０１０８ＭＡ０１２３４５６Ｘ", "uscc", "91110108MA0123456X"),
        (" 91110108ma0123456x ", "uscc", "91110108MA0123456X"),
        ("11010519491231002x", "id_card", "11010519491231002X"),
        ("110105 19491231 002X", "id_card", "11010519491231002X"),
        ("１１０１０５１９４９１２３１００２ｘ", "id_card", "11010519491231002X"),
        ("+86 138-0013-8000", "phone", "13800138000"),
        ("0086 13800138000", "phone", "13800138000"),
        ("8613800138000", "phone", "13800138000"),
        ("(010) 6552-9988", "phone", "01065529988"),
        ("　Ａｌｉｃｅ ", "text", "Alice"),
        (" Bob@Example.COM", "email", "bob@example.com"),
        ("   ", "uscc", None),
        # format characters a copy-paste carries: the same identifier on the other side
        ("91110108MA0123456X\u200b", "uscc", "91110108MA0123456X"),
        ("\ufeff11010519491231002X", "id_card", "11010519491231002X"),
        ("138\u00ad0013\u20608000", "phone", "13800138000"),
        ("bob@example.com\u200d", "email", "bob@example.com"),
    ],
)
def test_normalisation_cases(raw: str, kind: str, want: str | None) -> None:
    assert normalize(raw, kind) == want


def test_text_kind_keeps_compatibility_characters() -> None:
    assert normalize("㈱华为", "text") == "㈱华为"


def test_composite_encoding_is_unambiguous() -> None:
    assert encode_key(["ab", "c"]) != encode_key(["a", "bc"])
    spec = KeySpec.parse("name:text,phone:phone")
    assert spec.describe() == "text+phone"
    assert spec.encode_row(["Ａ", "+86 13800138000"]) == encode_key(["A", "13800138000"])
    assert spec.encode_row([None, "13800138000"]) is None


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(PsiConfigError):
        KeySpec.parse("x:nonsense")


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
    | st.text(alphabet="0123456789abcxyzXYZ-", max_size=20),
    st.sampled_from(["raw", "text", "uscc", "id_card", "phone", "email"]),
)
def test_the_ascii_fast_path_equals_the_full_rules(value: str, kind: str) -> None:
    def full(v: str) -> str | None:  # the rules of the module docstring, without shortcuts
        if kind == "raw":
            return v or None
        if kind == "text":
            return v.translate(_WIDTH).strip() or None
        nfkc = "".join(c for c in unicodedata.normalize("NFKC", v)
                       if unicodedata.category(c) != "Cf")  # format characters dropped
        if kind in ("uscc", "id_card"):
            return _SEPARATORS.sub("", nfkc).upper() or None
        if kind == "phone":
            out = _SEPARATORS.sub("", nfkc)
            m = _MOBILE.fullmatch(out)
            return (m.group(1) if m else out) or None
        return nfkc.strip().lower() or None

    assert normalize(value, kind) == full(value)


def test_single_column_batches_encode_like_encode_row() -> None:
    from dataspace.privacy.psi.batch import _hash_blind_task

    values = ["９１１１０１０８ＭＡ０１２３４５６Ｘ", None, "", "91110108ma0123456x"]
    spec = KeySpec.parse("c:uscc")
    key = bytes(range(32))
    got, valid = _hash_blind_task("x25519", key, b"p", spec, [pa.array(values[:4])])
    items = [e for v in values[:4] if (e := spec.encode_row([v])) is not None]
    assert valid.tolist() == [True, False, False, True]
    assert got == group("x25519").hash_blind(key, b"p", items)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (13800138000.0, "13800138000"),  # a phone number a spreadsheet stored as a double
        (-0.0, "0"),
        (2.0**53 - 1, "9007199254740991"),
        (Decimal("110105194912310021"), "110105194912310021"),  # exact at any size
        (Decimal("13800138000.00"), "13800138000"),
        (12, "12"),
        ("0012", "0012"),  # text keeps its leading zeros
    ],
)
def test_identifier_text_reads_whole_numbers_as_their_digits(value: object, text: str) -> None:
    assert identifier_text(value) == text


@pytest.mark.parametrize(
    "value", [1.5, 2.0**53, 1.1e18, float("nan"), float("-inf"), Decimal("1.01"), Decimal("NaN")]
)
def test_identifier_text_refuses_what_is_no_exact_whole_number(value: object) -> None:
    with pytest.raises(PsiConfigError, match="fraction or a number beyond") as err:
        identifier_text(value)
    assert repr(value) in str(err.value)
    assert "re-import the column as text" in str(err.value.hint)


def test_a_batch_of_doubles_blinds_like_the_same_integers() -> None:
    from dataspace.privacy.psi.batch import _hash_blind_task

    spec = KeySpec.parse("c:phone")
    key = bytes(range(32))
    as_doubles = _hash_blind_task("x25519", key, b"p", spec, [pa.array([13800138000.0, None])])
    as_ints = _hash_blind_task("x25519", key, b"p", spec, [pa.array([13800138000, None])])
    assert as_doubles[0] == as_ints[0] and as_doubles[1].tolist() == as_ints[1].tolist()
    with pytest.raises(PsiConfigError, match="fraction"):
        _hash_blind_task("x25519", key, b"p", spec, [pa.array([13800138000.5])])
