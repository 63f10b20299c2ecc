"""Per-agreement pseudonyms: the HMAC primitive, key derivation, what changes and what not."""

from __future__ import annotations

import stat
from pathlib import Path

import pyarrow as pa
import pytest

from dataspace.errors import DataspaceError
from dataspace.services import pseudonymize as ps


def test_hmac_sha256_matches_rfc4231_test_cases_1_and_2() -> None:
    assert ps.hmac_hex(b"\x0b" * 20, b"Hi There") == (
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
    assert ps.hmac_hex(b"Jefe", b"what do ya want for nothing?") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")


def test_secret_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    first = ps.load_or_create_secret(tmp_path)
    assert len(first) == 32
    path = tmp_path / ps.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ps.load_or_create_secret(tmp_path) == first


def test_a_creator_racing_another_mid_write_agrees_on_one_whole_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a second process asks for the secret while the first is drawing its bytes: neither
    # may see an empty key file, and both must end with the same secret
    real_token_bytes = ps.secrets.token_bytes
    seen_by_second: list[bytes] = []
    draws: list[int] = []

    def drawn_while_another_asks(n: int) -> bytes:
        draws.append(n)
        if len(draws) == 1:  # the first creator's draw; the second draws normally
            seen_by_second.append(ps.load_or_create_secret(tmp_path))
        return real_token_bytes(n)

    monkeypatch.setattr(ps.secrets, "token_bytes", drawn_while_another_asks)
    first = ps.load_or_create_secret(tmp_path)
    assert first == seen_by_second[0] and len(first) == 32
    assert [p.name for p in (tmp_path / "keys").iterdir()] == ["pseudonym.key"]


def test_a_staging_file_left_by_a_killed_process_is_removed_and_a_short_key_refused(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / f"{ps.STAGING_PREFIX}99999999-abc").write_bytes(b"half")  # a pid no process has
    secret = ps.load_or_create_secret(tmp_path)
    assert [p.name for p in keys.iterdir()] == ["pseudonym.key"] and len(secret) == 32
    (keys / "pseudonym.key").write_bytes(b"")  # damaged: not silently replaced
    with pytest.raises(DataspaceError, match="32-byte pseudonym secret"):
        ps.load_or_create_secret(tmp_path)


def test_without_hard_links_the_secret_is_still_created_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(1, "Operation not permitted")  # e.g. some network file systems

    monkeypatch.setattr(ps.os, "link", no_links)
    secret = ps.load_or_create_secret(tmp_path)
    assert len(secret) == 32 and ps.load_or_create_secret(tmp_path) == secret
    assert [p.name for p in (tmp_path / "keys").iterdir()] == ["pseudonym.key"]
    assert stat.S_IMODE((tmp_path / ps.KEY_FILE).stat().st_mode) == 0o600


def test_same_value_differs_across_agreements_and_is_reproducible() -> None:
    secret = bytes(range(32))
    a, b = ps.agreement_key(secret, "urn:uuid:a"), ps.agreement_key(secret, "urn:uuid:b")
    assert a != b
    value = "110105194912310021"
    assert ps.pseudonym(a, value) != ps.pseudonym(b, value)
    assert ps.pseudonym(ps.agreement_key(secret, "urn:uuid:a"), value) == ps.pseudonym(a, value)
    assert ps.pseudonym(a, value) == ps.hmac_hex(a, value.encode())


def test_normalisation_folds_width_case_and_space() -> None:
    key = ps.agreement_key(b"k" * 32, "urn:uuid:a")
    assert ps.pseudonym(key, " 11010519491231002X ") == ps.pseudonym(key, "11010519491231002x")
    assert ps.pseudonym(key, "１３８００１３８０００") == ps.pseudonym(key, "13800138000")
    assert ps.pseudonym(key, 42) == ps.pseudonym(key, "42")
    assert ps.pseudonym(key, None) is None


def test_only_named_columns_change_and_nulls_stay_null() -> None:
    key = ps.agreement_key(b"k" * 32, "urn:uuid:a")
    table = pa.table({"phone": ["13800138000", None, "13800138000"], "amount": [1, 2, None]})
    out = ps.pseudonymize_table(table, ["phone"], key)
    phones = out.column("phone").to_pylist()
    assert phones[1] is None and phones[0] == phones[2] == ps.pseudonym(key, "13800138000")
    assert len(phones[0]) == 64
    assert out.column("amount").to_pylist() == [1, 2, None]
    assert out.schema.field("amount").type == table.schema.field("amount").type


@pytest.mark.parametrize(
    ("category", "variants"),
    [
        ("mobile_cn", ["13800138000", "+86 138 0013 8000", "138-0013-8000", "0086 13800138000"]),
        ("id_card_cn",
         ["11010519491231002X", "110105 19491231 002x", "１１０１０５１９４９１２３１００２Ｘ"]),
        ("bank_card", ["6222021234567890", "6222 0212 3456 7890"]),
    ],
)
def test_a_categorys_spellings_of_one_value_are_one_pseudonym(
    category: str, variants: list[str]
) -> None:
    forms = {ps.normalise(v, category) for v in variants}
    assert len(forms) == 1
    # the plain form keeps the bytes it had before categories were used: pseudonyms made
    # under an agreement stay the same
    assert forms == {ps.normalise(variants[0])}
