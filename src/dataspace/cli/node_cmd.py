"""Top-level commands about the node itself: init, node show, serve, verify-proof."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from dataspace.cli.common import (
    JsonOption,
    console,
    key_text,
    node,
    print_json,
    read_json_file,
    read_text_file,
)
from dataspace.cli.lazy import lazy_module
from dataspace.errors import UsageError

if TYPE_CHECKING:
    from dataspace.ledger import cosignature, proof
    from dataspace.services import ledger as ledger_service
    from dataspace.services import node as node_service
    from dataspace.services import peer_outbox
else:
    cosignature = lazy_module("dataspace.ledger.cosignature")
    proof = lazy_module("dataspace.ledger.proof")
    ledger_service = lazy_module("dataspace.services.ledger")
    node_service = lazy_module("dataspace.services.node")
    peer_outbox = lazy_module("dataspace.services.peer_outbox")


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("node")(show_node)
    app.command("serve")(serve)
    app.command("verify-proof")(verify_proof)


def init(
    directory: Path = typer.Argument(
        ..., help="Directory for the new node (created; must be empty)."
    ),
    name: str = typer.Option(..., "--name", help="The node's name, e.g. bank-a."),
    database_url: str = typer.Option(
        None, "--database-url", help="PostgreSQL URL; default is SQLite in the node directory."
    ),
    database_schema: str = typer.Option(None, "--database-schema", help="PostgreSQL schema."),
) -> None:
    """Create a node: keys, config, state database, data folder, admin token."""
    created, secret = node_service.init_node(
        directory, name, database_url=database_url, database_schema=database_schema
    )
    console.print(
        f"created node [bold]{escape(created.name)}[/bold] in {escape(str(created.root))}"
    )
    console.print(f"public key: {escape(created.verifier_key())}")
    console.print("admin API token (shown only now, store it safely):")
    console.print(secret, markup=False)
    created.close()


def show_node(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Show the node's name, public key, ledger size and the notices peers are still owed."""
    n = node(ctx)
    info = {
        "name": n.name,
        "directory": str(n.root),
        "origin": n.origin,
        "verifier_key": n.verifier_key(),
        "ledger_size": ledger_service.size(n),
        "store": n.store.url.split("://")[0],
        "owed_notices": len(peer_outbox.owed(n)),  # sent again by the running server
    }
    if as_json:
        print_json(info)
        return
    for key, value in info.items():
        console.print(f"{key:>13}: {escape(str(value))}")


def serve(
    ctx: typer.Context,
    host: str = typer.Option(None, "--host", help="Address to listen on (default from node.toml)."),
    port: int = typer.Option(None, "--port", min=1, max=65535, help="Port (default 8600)."),
) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json)."""
    from dataspace.node.server import serve as run

    n = node(ctx)
    server_cfg = n.config.get("server", {})
    run(n, host or server_cfg.get("host", "127.0.0.1"), port or int(server_cfg.get("port", 8600)))


def verify_proof(
    proof_file: Path = typer.Argument(..., help="Proof bundle written by `ledger prove`."),
    key: str = typer.Option(
        ..., "--key", help="The node's public key string, or a file holding it."
    ),
    old_checkpoint: Path = typer.Option(
        None,
        "--old-checkpoint",
        help="A checkpoint note you hold (from `ledger checkpoint`): a consistency proof "
        "must extend exactly that log, not the older log the bundle itself names.",
    ),
    witness_keys: list[str] = typer.Option(
        None,
        "--witness",
        help="A witness's public key (its node.pub, or the string): the bundle's checkpoint "
        "must carry its valid cosignature. Repeatable.",
    ),
    quorum: int = typer.Option(
        None, "--quorum", help="How many of the --witness keys must have cosigned (default all)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Check a proof bundle offline, with nothing but the node's public key.

    The bundle proves the inclusion of an entry, or the consistency of two sizes of the log.
    With --witness, also that witnesses cosigned the checkpoint it rests on (the log showed them
    the same history)."""
    log_key = key_text(key)
    witnesses = [cosignature.CosignatureVerifier.parse(key_text(w)) for w in witness_keys or []]
    if quorum is not None and not witnesses:
        raise UsageError("--quorum counts --witness keys; pass some", hint="--witness W.pub")
    if quorum is not None and not 1 <= quorum <= len(witnesses):
        raise UsageError(f"--quorum {quorum} is not between 1 and the {len(witnesses)} "
                         "--witness key(s) given", hint="omit --quorum to need them all")
    held = None
    if old_checkpoint is not None:
        held = read_text_file(old_checkpoint,
                              hint="pass a checkpoint note written by `ledger checkpoint`")
    bundle = read_json_file(proof_file, "a JSON proof bundle",
                            hint="pass a file written by `ledger prove`")
    verified = proof.verify_bundle(
        bundle, log_key, old_checkpoint=held, witnesses=witnesses, quorum=quorum
    )
    if as_json:
        print_json(verified.to_dict())
        return
    console.print(f"[green]verified[/green]: {escape(verified.summary())}")
