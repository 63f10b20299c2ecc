"""Validation of user-chosen names (nodes, datasets, tokens)."""

from __future__ import annotations

import re
import unicodedata

from dataspace.errors import InvalidName

NODE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
MAX_DATASET_NAME = 120


def check_node_name(name: str) -> str:
    if not NODE_NAME_RE.match(name):
        raise InvalidName(
            f"invalid node name {name!r}",
            hint="use 1-63 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
        )
    return name


def check_dataset_name(name: str) -> str:
    """Dataset names may be Chinese, but never paths, dot-names or control characters."""
    stripped = name.strip()
    if not stripped:
        raise InvalidName("dataset name is empty", hint="pass --name NAME")
    if stripped != name:
        raise InvalidName(
            f"dataset name {name!r} has leading or trailing spaces", hint="remove them"
        )
    if len(name) > MAX_DATASET_NAME:
        raise InvalidName(
            f"dataset name is {len(name)} characters long", hint=f"use at most {MAX_DATASET_NAME}"
        )
    if "/" in name or "\\" in name or name in {".", ".."} or ".." in name:
        raise InvalidName(
            f"dataset name {name!r} contains a path separator or '..'",
            hint="use letters, digits, '-', '_' or '.' (Chinese characters are fine)",
        )
    for ch in name:
        cat = unicodedata.category(ch)
        if cat.startswith("C") or cat in {"Zl", "Zp"}:
            raise InvalidName(
                f"dataset name {name!r} contains the control character U+{ord(ch):04X}",
                hint="remove it",
            )
    if name.startswith(".") or name.startswith("-"):
        raise InvalidName(
            f"dataset name {name!r} starts with {name[0]!r}", hint="start with a letter or digit"
        )
    if unicodedata.normalize("NFC", name) != name:  # else 'café' and 'café' are two datasets
        raise InvalidName(
            f"dataset name {name!r} is not in Unicode NFC form (a decomposed accent?)",
            hint="write it with composed characters (NFC)",
        )
    return name


def lookalike_key(name: str) -> str:
    """What a name reads as: full-width and compatibility forms folded (NFKC), case folded."""
    return unicodedata.normalize("NFKC", name).casefold()


def check_label(name: str, what: str) -> str:
    """A free-text label shown in tables (a token's name): no control characters, which a
    terminal would obey when it prints the label."""
    for ch in name:
        cat = unicodedata.category(ch)
        if cat == "Cc" or cat in {"Zl", "Zp"}:
            raise InvalidName(
                f"{what} {name!r} contains the control character U+{ord(ch):04X}",
                hint="remove it",
            )
    return name
