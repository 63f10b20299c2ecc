"""Just enough RFC 8941 (structured field values) for ``Signature-Input`` and ``Signature``.

Dictionaries, inner lists, parameters, strings, tokens, integers, byte sequences and booleans;
decimals are refused. Pure: a malformed or oversized value raises :class:`FieldError`, which
:mod:`dataspace.identity.httpsig` answers as a
:class:`~dataspace.identity.httpsig.RequestSignatureError`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import NoReturn, Union

MAX_FIELD_LENGTH = 8192  # longest Signature / Signature-Input value parsed
MAX_COMPONENTS = 32


class FieldError(ValueError):
    """A structured field value is malformed or too long (the message says where)."""


BareItem = Union[str, int, bool, bytes, "Token"]
Params = dict[str, BareItem]


@dataclass(frozen=True)
class Token:
    value: str


@dataclass(frozen=True)
class Item:
    value: BareItem
    params: Params = field(default_factory=dict)


@dataclass(frozen=True)
class InnerList:
    items: tuple[Item, ...]
    params: Params = field(default_factory=dict)


_KEY_RE = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN_RE = re.compile(r"[A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]*")
_INT_RE = re.compile(r"-?[0-9]{1,15}")
_B64_RE = re.compile(r"[A-Za-z0-9+/=]*")


class _Parser:
    def __init__(self, text: str, what: str) -> None:
        self.s = text
        self.i = 0
        self.what = what

    def fail(self, msg: str) -> NoReturn:
        raise FieldError(f"malformed {self.what} header: {msg} at character {self.i}")

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def skip_sp(self) -> None:
        while self.peek() == " ":
            self.i += 1

    def skip_ows(self) -> None:
        while self.peek() in (" ", "\t") and self.peek():
            self.i += 1

    def match(self, pattern: re.Pattern[str], what: str) -> str:
        m = pattern.match(self.s, self.i)
        if m is None or (not m.group(0) and what != "base64"):
            self.fail(f"expected {what}")
        self.i = m.end()
        return m.group(0)

    def dictionary(self) -> dict[str, Item | InnerList]:
        out: dict[str, Item | InnerList] = {}
        self.skip_sp()
        while self.i < len(self.s):
            key = self.match(_KEY_RE, "a key")
            if self.peek() == "=":
                self.i += 1
                out[key] = self.inner_list() if self.peek() == "(" else self.item()
            else:
                out[key] = Item(True, self.params())
            self.skip_ows()
            if self.i >= len(self.s):
                break
            if self.peek() != ",":
                self.fail("expected ','")
            self.i += 1
            self.skip_ows()
            if self.i >= len(self.s):
                self.fail("trailing comma")
        return out

    def inner_list(self) -> InnerList:
        self.i += 1  # "("
        items: list[Item] = []
        while True:
            self.skip_sp()
            if self.peek() == ")":
                self.i += 1
                return InnerList(tuple(items), self.params())
            if len(items) >= MAX_COMPONENTS:
                self.fail(f"more than {MAX_COMPONENTS} inner-list members")
            items.append(self.item())
            if self.peek() not in (" ", ")"):
                self.fail("expected ' ' or ')' in inner list")

    def item(self) -> Item:
        value = self.bare_item()
        return Item(value, self.params())

    def params(self) -> Params:
        params: Params = {}
        while self.peek() == ";":
            self.i += 1
            self.skip_sp()
            key = self.match(_KEY_RE, "a parameter key")
            if self.peek() == "=":
                self.i += 1
                params[key] = self.bare_item()
            else:
                params[key] = True
        return params

    def bare_item(self) -> BareItem:
        ch = self.peek()
        if ch == '"':
            return self.string()
        if ch == ":":
            self.i += 1
            b64 = self.match(_B64_RE, "base64")
            if self.peek() != ":":
                self.fail("unterminated byte sequence")
            self.i += 1
            try:
                return base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError):
                self.fail("byte sequence is not valid base64")
        if ch == "?":
            self.i += 1
            flag = self.peek()
            if flag not in ("0", "1"):
                self.fail("expected ?0 or ?1")
            self.i += 1
            return flag == "1"
        if ch == "-" or ch.isdigit():
            number = self.match(_INT_RE, "an integer")
            if self.peek() == ".":
                self.fail("decimals are not supported")
            if self.peek().isdigit():
                self.fail("integer longer than 15 digits")
            return int(number)
        if ch.isalpha() or ch == "*":
            return Token(self.match(_TOKEN_RE, "a token"))
        self.fail("expected an item")

    def string(self) -> str:
        self.i += 1
        out: list[str] = []
        while True:
            ch = self.peek()
            if not ch:
                self.fail("unterminated string")
            self.i += 1
            if ch == "\\":
                nxt = self.peek()
                if nxt not in ('"', "\\"):
                    self.fail("bad escape in string")
                out.append(nxt)
                self.i += 1
            elif ch == '"':
                return "".join(out)
            elif not 0x20 <= ord(ch) <= 0x7E:
                self.fail("string contains a non-printable or non-ASCII character")
            else:
                out.append(ch)


def parse_dictionary(value: str, what: str) -> dict[str, Item | InnerList]:
    """Parse an RFC 8941 dictionary field value (raises :class:`FieldError`)."""
    if len(value) > MAX_FIELD_LENGTH:
        raise FieldError(f"{what} header is longer than {MAX_FIELD_LENGTH} characters")
    return _Parser(value, what).dictionary()


def serialize_bare_item(value: BareItem) -> str:
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        if abs(value) >= 10**15:
            raise ValueError("integer out of RFC 8941 range")
        return str(value)
    if isinstance(value, bytes):
        return f":{base64.b64encode(value).decode('ascii')}:"
    if isinstance(value, Token):
        return value.value
    if any(not 0x20 <= ord(ch) <= 0x7E for ch in value):
        raise ValueError("strings hold printable ASCII only")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def serialize_params(params: Params) -> str:
    return "".join(
        f";{key}" if value is True else f";{key}={serialize_bare_item(value)}"
        for key, value in params.items()
    )


def serialize_inner_list(inner: InnerList) -> str:
    members = " ".join(
        serialize_bare_item(item.value) + serialize_params(item.params) for item in inner.items
    )
    return f"({members}){serialize_params(inner.params)}"
