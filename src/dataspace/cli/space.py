"""`dataspace space ...`: sign a membership list (operator), join a space, show members."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from dataspace.cli.common import (
    JsonOption,
    actor,
    console,
    key_text,
    node,
    print_json,
    read_text_file,
    table,
    write_out,
)
from dataspace.cli.lazy import lazy_module
from dataspace.errors import InputError, UsageError
from dataspace.identity.membership import Member

if TYPE_CHECKING:
    from dataspace.services import space
else:
    space = lazy_module("dataspace.services.space")


app = typer.Typer(help="The space: operator-signed membership list.", no_args_is_help=True)


def _parse_member(spec: str) -> Member:
    parts = spec.split(",", 3)
    if len(parts) < 3:
        raise UsageError(
            f"--member {spec!r} is not NAME,URL,KEY[,ROLES]",
            hint="KEY is a verifier key string or a node.pub file; ROLES is e.g. provider+consumer",
        )
    name, url, key = parts[0], parts[1], key_text(parts[2])
    roles = tuple(r for r in (parts[3].split("+") if len(parts) == 4 else ["member"]) if r)
    return Member(name, url, key, roles)


@app.command("sign")
def sign(
    ctx: typer.Context,
    space_name: str = typer.Option(..., "--space", help="The space's name."),
    serial: int = typer.Option(..., "--serial", help="Higher than every earlier list's."),
    members: list[str] = typer.Option(
        ..., "--member", help="NAME,URL,KEY[,ROLES] — repeat for each member."
    ),
    valid_days: int = typer.Option(365, "--valid-days", help="Days until the list expires."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the signed list here."),
) -> None:
    """Sign a membership list with this (operator) node's key."""
    note = space.issue_membership(
        node(ctx),
        [_parse_member(m) for m in members],
        space=space_name,
        serial=serial,
        valid_days=valid_days,
        actor=actor(),
    )
    if out is None:
        print(note, end="")
    else:
        write_out(out, note)
        console.print(f"wrote membership list serial {serial} to {escape(str(out))}")


@app.command("join")
def join(
    ctx: typer.Context,
    note_file: Path = typer.Argument(..., help="The operator's signed membership list."),
    operator_key: str = typer.Option(
        ..., "--operator-key", help="The operator's verifier key, or a file holding it."
    ),
) -> None:
    """Adopt the operator's membership list (a later list must have a higher serial)."""
    hint = "pass the membership list the operator signed (`dataspace space sign --out FILE`)"
    note = read_text_file(note_file, hint)
    if not note.strip():
        raise InputError(f"{note_file} is empty", hint=hint)
    joined = space.join(node(ctx), note, key_text(operator_key), actor=actor())
    console.print(
        f"joined space {escape(joined.space)} (serial {joined.serial}, "
        f"{len(joined.members)} members)"
    )


@app.command("show")
def show(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """The space's members as this node knows them."""
    listed = space.membership(node(ctx))
    if as_json:
        print_json(
            {
                "space": listed.space,
                "serial": listed.serial,
                "issued": listed.issued.isoformat(),
                "expires": listed.expires.isoformat(),
                "members": [
                    {"name": m.name, "url": m.url, "key": m.verifier_key, "roles": list(m.roles)}
                    for m in listed.members
                ],
            }
        )
        return
    console.print(
        f"space [bold]{escape(listed.space)}[/bold], serial {listed.serial}, "
        f"expires {listed.expires:%Y-%m-%d}"
    )
    console.print(
        table(
            None,
            ["member", "url", "roles"],
            [[m.name, m.url, ",".join(m.roles)] for m in listed.members],
        )
    )
