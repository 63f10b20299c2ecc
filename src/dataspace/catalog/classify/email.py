"""电子邮件地址 — email addresses (the practical subset of RFC 5321/5322 addresses).

``local@domain``: the local part is dot-separated atoms of letters, digits and
``!#$%&'*+/=?^_`{|}~-``; the domain has at least two labels of letters, digits and inner
hyphens, the last one alphabetic (or an ``xn--`` IDN label). 254 characters at most.
"""

from __future__ import annotations

import re

from dataspace.catalog.classify.base import BaseDetector, HeaderVocab, to_halfwidth

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(
    rf"^{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+(?:[A-Za-z]{{2,63}}|xn--[A-Za-z0-9-]{{1,59}})$"
)


def is_valid_email(value: str) -> bool:
    text = to_halfwidth(value).strip()
    if len(text) > 254 or "@" not in text:
        return False
    local = text.rsplit("@", 1)[0]
    return len(local) <= 64 and _EMAIL.match(text) is not None


class EmailDetector(BaseDetector):
    category = "email"
    rank = 70
    strength = 0.95
    evidence = "email addresses"
    vocab = HeaderVocab(
        zh=("邮箱", "电子邮件", "邮件地址", "电邮"),
        en=("email", "e_mail", "mail", "email_address", "mailbox"),
    )

    def match(self, value: str, *, hinted: bool = False) -> bool:
        return is_valid_email(value)
