"""`dataspace token ...`: API tokens with roles."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from dataspace.cli.common import JsonOption, actor, console, node, print_json, table
from dataspace.cli.lazy import lazy_module

if TYPE_CHECKING:
    from dataspace.services import tokens
else:
    tokens = lazy_module("dataspace.services.tokens")


app = typer.Typer(help="Issue, list and revoke API tokens.", no_args_is_help=True)


@app.command("issue")
def issue(
    ctx: typer.Context,
    name: str = typer.Option(..., "--name", help="Who or what the token is for."),
    role: str = typer.Option(..., "--role", help="admin, provider, consumer or auditor."),
) -> None:
    """Issue a token; its secret is printed once and stored only as a hash."""
    secret = tokens.issue(node(ctx), name=name, role=role, actor=actor())
    console.print(f"{escape(role)} token for {escape(name)} (shown only now):")
    console.print(secret, markup=False)


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """List tokens (never their secrets)."""
    infos = tokens.list_tokens(node(ctx))
    if as_json:
        print_json([t.to_dict() for t in infos])
        return
    console.print(
        table(
            None,
            ["id", "name", "role", "created", "revoked"],
            [
                [
                    t.id,
                    t.name,
                    t.role,
                    t.created_at.isoformat(timespec="seconds"),
                    t.revoked_at.isoformat(timespec="seconds") if t.revoked_at else "",
                ]
                for t in infos
            ],
        )
    )


@app.command("revoke")
def revoke(ctx: typer.Context, token_id: str) -> None:
    """Revoke a token by id."""
    info = tokens.revoke(node(ctx), token_id, actor=actor())
    console.print(f"revoked token {escape(info.id)} ({escape(info.name)})")
