from __future__ import annotations

import pytest

from dataspace.privacy.psi import KeySpec, PsiConfigError, encode_key, normalize


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
