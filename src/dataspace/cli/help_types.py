"""How `--help` names what an option takes: TEXT, INTEGER, FLOAT, PATH; nothing for a flag.

Typer 0.2x prints Python annotations instead (``--json <bool>``, ``--with <list[str]>``): a flag
then reads as if it wanted a value, and the notation is a programmer's, not a user's. The rule
here replaces Typer's ``display_type`` once, for every command (an option given a ``metavar``
keeps it: Typer shows that first). Typer versions without ``display_type`` print click's words
already and are left alone.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import typer.core

WORDS: dict[Any, str] = {str: "TEXT", int: "INTEGER", float: "FLOAT", bool: "BOOLEAN",
                         Path: "PATH"}


def shown_type(annotation: Any, *, flag: bool) -> str:
    """The word help shows for a value of ``annotation``: "" for a flag, the element's word for a
    repeatable option (its help says "repeat")."""
    if flag:
        return ""
    if typing.get_origin(annotation) in (list, tuple):
        args = typing.get_args(annotation)
        annotation = args[0] if args else str
    if annotation in WORDS:
        return WORDS[annotation]
    return getattr(annotation, "__name__", "VALUE").upper()


def _display_type(self: Any, ctx: Any) -> str:
    return shown_type(self.type_descriptor.annotation, flag=bool(getattr(self, "is_flag", False)))


def install() -> None:
    for cls in (typer.core.TyperOption, typer.core.TyperArgument):
        if hasattr(cls, "display_type"):
            setattr(cls, "display_type", _display_type)  # noqa: B010 (a method replaced on purpose)
