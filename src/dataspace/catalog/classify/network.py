"""IP地址 — IPv4 and IPv6 addresses (validated by :mod:`ipaddress`).

Dotted-quad IPv4 without leading zeros; IPv6 in any RFC 4291 text form. Four-part version
numbers (``1.2.3.4``) look the same as addresses, so a column of them is only flagged when
most values are not small (every octet < 10) or the header says "ip".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from dataspace.catalog.classify.base import BaseDetector, HeaderVocab, to_halfwidth

_VOCAB = HeaderVocab(
    zh=("ip地址", "网络地址"),
    en=("ip", "ip_addr", "ip_address", "ipaddr", "ipv4", "ipv6", "client_ip", "src_ip",
        "dst_ip", "remote_addr", "host_ip"),
)


def is_ipv4(value: str) -> bool:
    text = to_halfwidth(value).strip()
    if text.count(".") != 3:
        return False
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def is_ipv6(value: str) -> bool:
    text = to_halfwidth(value).strip()
    if ":" not in text:
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


class Ipv4Detector(BaseDetector):
    category = "ipv4"
    rank = 50
    strength = 0.9
    evidence = "IPv4 addresses"
    vocab = _VOCAB

    def match(self, value: str, *, hinted: bool = False) -> bool:
        return is_ipv4(value)

    def accept_column(self, matched: Sequence[str], *, hinted: bool) -> str | None:
        if hinted:
            return None
        small = sum(1 for v in matched if all(len(p) == 1 for p in v.strip().split(".")))
        if matched and small / len(matched) > 0.5:
            return "most values have only single-digit parts, like version numbers"
        return None


class Ipv6Detector(BaseDetector):
    category = "ipv6"
    rank = 50
    strength = 0.9
    evidence = "IPv6 addresses"
    vocab = _VOCAB

    def match(self, value: str, *, hinted: bool = False) -> bool:
        return is_ipv6(value)
