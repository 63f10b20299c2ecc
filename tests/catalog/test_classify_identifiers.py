"""Checksummed identifiers: resident ID, USCC, bank cards, mobile numbers.

Valid values come from generators written here from the specifications (independent of the
code under test) plus hand-checked public examples; decoys are seeded random columns of
1,000 values with the right shape.
"""

from __future__ import annotations

import datetime as dt
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataspace.catalog.classify import classify_column, validate_value
from dataspace.catalog.classify.bank_card import is_valid_card
from dataspace.catalog.classify.id_card import is_valid_id
from dataspace.catalog.classify.mobile import is_valid_mobile
from dataspace.catalog.classify.uscc import is_valid_org_code, is_valid_uscc

# --- generators, from the standards ----------------------------------------------------

ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]  # GB 11643 table
REGIONS = ["110105", "310104", "440305", "510107", "330106", "650102", "230103", "460105"]


def id_check(body: str) -> str:
    return "10X98765432"[sum(int(d) * w for d, w in zip(body, ID_WEIGHTS, strict=True)) % 11]


def make_id(rng: random.Random) -> str:
    born = dt.date(1930, 1, 1) + dt.timedelta(days=rng.randrange(365 * 90))
    body = rng.choice(REGIONS) + born.strftime("%Y%m%d") + f"{rng.randrange(1000):03d}"
    return body + id_check(body)


USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]
ORG_WEIGHTS = [3, 7, 9, 10, 5, 8, 4, 2]


def org_check(body: str) -> str:
    values = [int(c) if c.isdigit() else ord(c) - 55 for c in body]  # A=10 ... Z=35
    total = sum(v * w for v, w in zip(values, ORG_WEIGHTS, strict=True))
    c = 11 - total % 11
    return {10: "X", 11: "0"}.get(c, str(c))


def uscc_check(body: str) -> str:
    total = sum(USCC_ALPHABET.index(c) * w for c, w in zip(body, USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def make_uscc(rng: random.Random) -> str:
    head = rng.choice(["91", "92", "93", "11", "12", "52", "53", "51"])
    org_body = "".join(rng.choice("0123456789ABCDEFGHJKLMNPQRTUWY") for _ in range(8))
    org = org_body + org_check(org_body)
    if org[-1] not in USCC_ALPHABET:  # pragma: no cover - X is in the alphabet
        return make_uscc(rng)
    body = head + rng.choice(REGIONS) + org
    return body + uscc_check(body)


def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def make_card(rng: random.Random) -> str:
    prefix, length = rng.choice([("622848", 19), ("621700", 19), ("4", 16), ("53", 16)])
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    return body + luhn_digit(body)


def make_mobile(rng: random.Random) -> str:
    return rng.choice(["138", "139", "186", "177", "199", "150"]) + f"{rng.randrange(10**8):08d}"


def column(make, n=1000, seed=7):
    rng = random.Random(seed)
    return [make(rng) for _ in range(n)]


# --- resident ID -----------------------------------------------------------------------


def test_public_example_id_number_is_valid():
    # GB 11643-1999 worked example: Beijing Chaoyang, born 1949-12-31, check character X
    assert is_valid_id("11010519491231002X")
    assert is_valid_id("11010519491231002x")  # lower-case x is normalised
    assert is_valid_id(" １１０１０５１９４９１２３１００２Ｘ ")  # full-width digits


@pytest.mark.parametrize(
    "value",
    [
        "110105194912310021",  # wrong check character
        "110105194902300025",  # 30 February
        "990105194912310024",  # no province 99
        "110105189912310028",  # born before 1900
        "110105299912310020",  # born in the future
        "11010519491231002",  # 17 characters
        "1101051949123100XX",
    ],
)
def test_invalid_id_numbers_are_rejected(value):
    assert not is_valid_id(value)


def test_legacy_15_digit_id_numbers_are_accepted_with_date_and_province_checks():
    assert is_valid_id("110105491231002")
    assert not is_valid_id("110105491331002")  # month 13


@settings(max_examples=200, deadline=None)
@given(st.randoms(use_true_random=False))
def test_generated_id_numbers_always_validate(rng):
    assert is_valid_id(make_id(rng))


@settings(max_examples=200, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(0, 17), st.integers(1, 10))
def test_a_single_character_change_always_fails_the_id_check(rng, pos, delta):
    value = make_id(rng)
    alphabet = "0123456789X"
    old = value[pos]
    new = alphabet[(alphabet.index(old) + delta) % 11]
    if pos < 17 and new == "X":
        new = "0" if old != "0" else "1"
    mutated = value[:pos] + new + value[pos + 1 :]
    assert not is_valid_id(mutated)


def test_column_of_ids_is_classified_as_resident_id():
    found = classify_column("col", column(make_id))
    assert [f.category for f in found] == ["id_card_cn"]
    assert found[0].share == 1.0 and found[0].pi_class == "sensitive_personal"
    assert found[0].reason.startswith("1,000 of 1,000 sampled values are valid resident ID")


DISGUISES = {
    "no-break spaces": lambda v: f"{v[:3]}\u00a0{v[3:7]}\u00a0{v[7:]}",
    "tabs": lambda v: f"{v[:3]}\t{v[3:]}",
    "zero-width spaces": lambda v: "\u200b".join(v),
    "a soft hyphen and a byte order mark": lambda v: f"\ufeff{v[:6]}\u00ad{v[6:]}",
    "full-width digits": lambda v: v.translate({c: c + 0xFEE0 for c in range(0x30, 0x3A)}),
}
KINDS = {"id_card_cn": make_id, "mobile_cn": make_mobile, "bank_card": make_card}


@pytest.mark.parametrize("disguise", DISGUISES)
@pytest.mark.parametrize("kind", KINDS)
def test_identifiers_are_found_through_invisible_and_odd_characters(disguise, kind):
    """A column whose values carry characters no reader sees (or full-width digits) is the
    same column: it must not be graded as harmless text."""
    values = [DISGUISES[disguise](v) for v in column(KINDS[kind])]
    assert [f.category for f in classify_column("col", values)] == [kind]


@pytest.mark.parametrize("kind", ["mobile_cn", "bank_card"])
def test_numbers_a_spreadsheet_wrote_as_floats_are_found(kind):
    values = [f"{v}.0" for v in column(KINDS[kind])]
    assert [f.category for f in classify_column("col", values)] == [kind]


def test_id_numbers_with_dashes_are_found():
    values = [f"{v[:6]}-{v[6:14]}-{v[14:]}" for v in column(make_id)]
    assert [f.category for f in classify_column("col", values)] == ["id_card_cn"]


def test_random_18_digit_order_numbers_are_not_ids():
    found = classify_column("order_no", column(lambda r: f"{r.randrange(10**18):018d}"))
    assert found == []


def test_order_numbers_with_a_valid_mod11_check_are_not_ids():
    # Decoy: every value passes ISO 7064 MOD 11-2, but dates and regions are random.
    def decoy(r):
        body = f"{r.randrange(10**17):017d}"
        return body + id_check(body)

    values = column(decoy)
    assert sum(map(is_valid_id, values)) < 10
    assert classify_column("ref", values) == []


# --- unified social credit code --------------------------------------------------------


def test_public_example_uscc_is_valid():
    assert is_valid_uscc("91350100M000100Y43")
    assert is_valid_org_code("M000100Y-4")
    assert not is_valid_uscc("91350100M000100Y44")  # wrong check character
    assert not is_valid_uscc("91350100M000100Y33")  # wrong organisation-code check
    assert not is_valid_uscc("94350100M000100Y4X")  # 9 (工商) has no category 4


@settings(max_examples=200, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(0, 17), st.integers(1, 30))
def test_generated_usccs_validate_and_single_changes_fail(rng, pos, delta):
    value = make_uscc(rng)
    assert is_valid_uscc(value)
    new = USCC_ALPHABET[(USCC_ALPHABET.index(value[pos]) + delta) % 31]
    assert not is_valid_uscc(value[:pos] + new + value[pos + 1 :])


def test_column_of_usccs_is_an_organisation_identifier():
    found = classify_column("信用代码", column(make_uscc))
    assert found[0].category == "uscc" and found[0].pi_class == "organisation"
    assert found[0].source == "values+header"


def test_random_18_character_codes_are_not_usccs():
    values = column(lambda r: "".join(r.choice(USCC_ALPHABET) for _ in range(18)))
    assert classify_column("code", values) == []


def test_codes_with_a_valid_uscc_check_but_random_org_code_are_not_usccs():
    def decoy(r):
        body = "91" + r.choice(REGIONS) + "".join(r.choice(USCC_ALPHABET) for _ in range(9))
        return body + uscc_check(body)

    values = column(decoy)
    assert sum(map(is_valid_uscc, values)) < 150  # ~1 in 11 pass the org check by chance
    assert classify_column("code", values) == []


# --- bank cards ------------------------------------------------------------------------


def test_known_test_card_numbers():
    assert is_valid_card("4111 1111 1111 1111")  # Visa test number
    assert is_valid_card("5555-5555-5555-4444")  # Mastercard test number
    assert not is_valid_card("4111111111111112")  # Luhn fails
    assert not is_valid_card("1111111111111117")  # Luhn ok, no issuer starts with 1


@settings(max_examples=200, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(0, 18), st.integers(1, 9))
def test_generated_cards_validate_and_single_digit_changes_fail(rng, pos, delta):
    value = make_card(rng)
    assert is_valid_card(value)
    pos %= len(value)
    new = str((int(value[pos]) + delta) % 10)
    assert not is_valid_card(value[:pos] + new + value[pos + 1 :])


def test_column_of_cards_is_a_bank_card_column_not_an_id_or_mobile_column():
    found = classify_column("c", column(make_card))
    assert [f.category for f in found] == ["bank_card"]


def test_random_16_digit_numbers_are_not_cards():
    assert classify_column("n", column(lambda r: f"{r.randrange(10**16):016d}")) == []


def test_luhn_valid_numbers_with_random_prefixes_are_not_cards():
    # Every value passes Luhn; the issuer-prefix check keeps the share far below 0.8.
    def decoy(r):
        body = f"{r.randrange(10**15):015d}"
        return body + luhn_digit(body)

    values = column(decoy)
    assert 0.1 < sum(map(is_valid_card, values)) / len(values) < 0.6
    assert classify_column("n", values) == []


def test_consecutive_luhn_valid_ticket_numbers_are_not_cards():
    start = 4000_0000_0000_0000
    values = []
    n = start
    while len(values) < 1000:
        body = str(n)[:-1]
        values.append(body + luhn_digit(body))
        n += 10
    assert all(map(is_valid_card, values))
    assert classify_column("ticket", values) == []
    # the header overrides the sequence veto: a card column may hold consecutive numbers
    assert classify_column("card_no", values)[0].category == "bank_card"


# --- mobile numbers --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["13812345678", "+86 138 1234 5678", "86-199-1234-5678", "0086 17712345678",
              "１３８１２３４５６７８", "16612345678", "19212345678"],
)
def test_valid_mobile_numbers(value):
    assert is_valid_mobile(value)


@pytest.mark.parametrize(
    "value", ["12345678901", "15412345678", "14012345678", "19412345678", "1381234567",
              "138123456789", "23812345678", "1381234567a"],
)
def test_invalid_mobile_numbers(value):
    assert not is_valid_mobile(value)


def test_column_of_mobile_numbers_is_classified():
    found = classify_column("手机号", column(make_mobile))
    assert found[0].category == "mobile_cn" and found[0].source == "values+header"
    assert found[0].confidence > 0.9


def test_random_11_digit_numbers_are_not_mobile_numbers():
    assert classify_column("n", column(lambda r: f"{r.randrange(10**11):011d}")) == []
    # even those starting with 1: only ~60% are in the allocated segments
    assert classify_column("n", column(lambda r: f"1{r.randrange(10**10):010d}")) == []


def test_validate_value_for_the_quality_module():
    assert validate_value("id_card_cn", "11010519491231002X")
    assert not validate_value("id_card_cn", "110105194912310021")
    assert validate_value("mobile_cn", "13812345678")
    assert not validate_value("bank_card", None)
    assert not validate_value("email", "  ")


@pytest.mark.parametrize("marker", ["NULL", "null", "N/A", "-", "无", "None"])
def test_placeholders_for_missing_values_do_not_hide_an_id_column(marker):
    """An export's 'NULL' in 30 % of the rows is a missing value, not a failed ID number."""
    values = [v if i % 10 >= 3 else marker for i, v in enumerate(column(make_id))]
    [found] = classify_column("客户标识", values)
    assert found.category == "id_card_cn" and found.share == 1.0
