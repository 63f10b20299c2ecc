"""Every command's line in its group's listing reads as one sentence.

Typer's rich help keeps the hard line breaks of a command's first docstring paragraph in the
group listing, so a summary wrapped in the source shows up broken mid-sentence in
`dataspace --help`: the first paragraph must be a single line.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from typing import Any

import typer

from dataspace.cli.main import app


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    for name, command in getattr(group, "commands", {}).items():
        yield " ".join((*path, name)), command
        yield from _commands(command, (*path, name))


def test_every_listed_summary_is_one_line() -> None:
    listed = list(_commands(typer.main.get_command(app)))
    assert len(listed) > 40  # the walk reached the subgroups
    broken = {
        name: summary
        for name, command in listed
        if "\n" in (summary := inspect.cleandoc(command.short_help or command.help or "")
                    .split("\n\n")[0])
    }
    assert broken == {}, "start these docstrings with a one-line summary and a blank line"


def test_the_root_listing_shows_a_summary_unbroken() -> None:
    shown = typer.testing.CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    assert "Check a proof bundle offline, with nothing but the node's public key." in shown.output


def test_help_names_values_in_words_and_shows_nothing_for_a_flag() -> None:
    runner = typer.testing.CliRunner()
    pythonic = re.compile(r"<(?:bool|str|int|float|path|list\[[a-z]+\])>")
    leaks: dict[str, list[str]] = {}
    for name, command in _commands(typer.main.get_command(app)):
        if getattr(command, "commands", None):
            continue  # a group: its commands are walked too
        shown = runner.invoke(app, [*name.split(), "--help"], env={"COLUMNS": "200"})
        assert shown.exit_code == 0, name
        if found := pythonic.findall(shown.output):
            leaks[name] = found
        if "--json" in shown.output:  # a flag takes no value: nothing between it and its help
            assert re.search(r"--json\s+[A-Z][a-z]", shown.output), name
    assert leaks == {}
    ledger_help = runner.invoke(app, ["ledger", "log", "--help"], env={"COLUMNS": "200"}).output
    assert re.search(r"--start\s+INTEGER", ledger_help)
