"""Pattern detectors: email, vehicle plates, passports, IP addresses, coordinates."""

from __future__ import annotations

import random

import pytest

from dataspace.catalog.classify import classify_column
from dataspace.catalog.classify.email import is_valid_email
from dataspace.catalog.classify.geo import parse_pair
from dataspace.catalog.classify.network import is_ipv4, is_ipv6
from dataspace.catalog.classify.passport import is_valid_passport
from dataspace.catalog.classify.vehicle_plate import is_valid_plate


def cats(found):
    return [f.category for f in found]


@pytest.mark.parametrize("value", ["zhang.wei@example.com", "li+tag@mail.sina.com.cn",
                                   "a_b-c@sub.example.org", "ＵＳＥＲ＠ＥＸＡＭＰＬＥ.ＣＯＭ"])
def test_valid_emails(value):
    assert is_valid_email(value)


@pytest.mark.parametrize("value", ["plainaddress", "a@b", "a@@b.com", ".a@b.com", "a..b@c.com",
                                   "a@-b.com", "a@b.c", "a b@c.com", "a@b.com."])
def test_invalid_emails(value):
    assert not is_valid_email(value)


@pytest.mark.parametrize("value", ["京A12345", "沪B·D1234", "粤BD12345", "粤B12345D",
                                   "川A1234学", "浙AFA1234", "苏E 6X88T"])
def test_valid_plates(value):
    assert is_valid_plate(value)


@pytest.mark.parametrize("value", ["京AI2345", "京A1234O", "A12345", "京12345", "京A123456",
                                   "港A12345", "京AZ12345", "京AD12345X"])
def test_invalid_plates(value):
    assert not is_valid_plate(value)


@pytest.mark.parametrize("value", ["E12345678", "EA1234567", "G23456789", "SE1234567", "P1234567"])
def test_valid_passport_numbers(value):
    assert is_valid_passport(value)


@pytest.mark.parametrize("value", ["E1234567", "EI1234567", "X12345678", "E123456789", "12345678E"])
def test_invalid_passport_numbers(value):
    assert not is_valid_passport(value)


def test_passport_column_of_random_numbers_is_classified():
    rng = random.Random(3)
    values = [rng.choice("EG") + f"{rng.randrange(10**8):08d}" for _ in range(1000)]
    found = classify_column("col", values)
    assert cats(found) == ["passport"]
    assert found[0].confidence < 0.75  # pattern only: weaker than checksummed identifiers


def test_sequential_invoice_numbers_shaped_like_passports_are_not_passports():
    values = [f"E2024{i:04d}" for i in range(1000)]
    assert all(map(is_valid_passport, values))
    assert classify_column("invoice", values) == []


def test_zero_padded_serials_shaped_like_passports_are_not_passports():
    rng = random.Random(4)
    values = [f"G000{rng.randrange(10**5):05d}" for _ in range(1000)]
    assert classify_column("sku", values) == []


def test_ipv4_and_ipv6():
    assert is_ipv4("192.168.1.20") and is_ipv4("8.8.8.8")
    assert not is_ipv4("256.1.1.1") and not is_ipv4("01.2.3.4") and not is_ipv4("1.2.3")
    assert is_ipv6("2001:db8::1") and not is_ipv6("2001:db8::g")
    rng = random.Random(5)
    values = [".".join(str(rng.randrange(256)) for _ in range(4)) for _ in range(500)]
    assert cats(classify_column("col", values)) == ["ipv4"]


def test_version_numbers_are_not_ip_addresses_unless_the_header_says_ip():
    values = [f"{a}.{b}.{c}.{d}" for a in range(3) for b in range(5) for c in range(5)
              for d in range(4)]
    assert classify_column("version", values) == []
    assert cats(classify_column("client_ip", values)) == ["ipv4"]


def test_coordinate_pairs_and_precision():
    assert parse_pair("39.9042,116.4074") == (39.9042, 116.4074, 4)
    assert parse_pair("POINT(116.4074 39.9042)") == (39.9042, 116.4074, 4)
    assert parse_pair("(31.23, 121.47)") == (31.23, 121.47, 2)
    assert parse_pair("95.0,10.0") is None  # latitude out of range
    assert parse_pair("39,116") is None  # no decimals
    rng = random.Random(6)
    precise = [f"{rng.uniform(18, 53):.5f},{rng.uniform(73, 135):.5f}" for _ in range(300)]
    coarse = [f"{rng.uniform(18, 53):.2f},{rng.uniform(73, 135):.2f}" for _ in range(300)]
    found = classify_column("col", precise)
    assert cats(found) == ["geo_point_precise"] and found[0].pi_class == "sensitive_personal"
    assert cats(classify_column("col", coarse)) == ["geo_point"]


def test_single_latitude_column_needs_the_header():
    rng = random.Random(8)
    values = [f"{rng.uniform(18, 53):.6f}" for _ in range(300)]
    assert classify_column("col", values) == []
    found = classify_column("纬度", values)
    assert cats(found) == ["geo_point_precise"] and found[0].source == "values+header"
