"""`dataspace ledger ...`: read the log, sign checkpoints, prove entries, verify everything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from dataspace.cli.common import (
    JsonOption,
    console,
    err_console,
    key_text,
    node,
    print_json,
    read_text_file,
    table,
    write_out,
)
from dataspace.cli.lazy import lazy_module
from dataspace.errors import Conflict, LedgerTampered, UsageError

if TYPE_CHECKING:
    from dataspace.services import ledger
else:
    ledger = lazy_module("dataspace.services.ledger")


app = typer.Typer(help="The node's verifiable log (RFC 9162).", no_args_is_help=True)


@app.command("log")
def log(
    ctx: typer.Context,
    start: int = typer.Option(0, "--start", help="First entry index."),
    limit: int = typer.Option(50, "--limit", help="Most entries to show."),
    as_json: bool = JsonOption,
) -> None:
    """List ledger entries, oldest first from --start."""
    n = node(ctx)
    size = ledger.size(n)
    if start < 0 or limit < 1:
        raise UsageError("--start must be 0 or more and --limit 1 or more")
    if start >= size and size and not as_json:  # (as JSON, a page past the end is [])
        raise UsageError(f"the ledger has {size:,} entries (0 to {size - 1:,}): --start "
                         f"{start:,} is past its end",
                         hint=f"the newest: --start {max(0, size - limit)}")
    rows = ledger.entries(n, start, limit)
    if as_json:
        print_json(rows)
        return
    console.print(
        table(
            None,
            ["#", "time", "actor", "action", "payload"],
            [
                [
                    r["index"],
                    r["entry"]["time"],
                    r["entry"]["actor"],
                    r["entry"]["action"],
                    json.dumps(r["payload"], ensure_ascii=False)[:80],
                ]
                for r in rows
            ],
        )
    )
    if rows and (start > 0 or start + len(rows) < size):  # say that there is more, and where
        last = start + len(rows) - 1
        more = f"; the next: --start {last + 1}" if last + 1 < size else ""
        console.print(f"entries {start:,} to {last:,} of {size:,}{more}; the newest: --start "
                      f"{max(0, size - limit)}", style="dim")


@app.command("checkpoint")
def checkpoint(ctx: typer.Context) -> None:
    """Print the latest signed checkpoint (signing one if the log grew)."""
    print(ledger.checkpoint(node(ctx)), end="")


@app.command("witness")
def witness_cmd(
    ctx: typer.Context,
    by: list[str] = typer.Option(
        None, "--by", help="A member to ask (repeatable; default: every other member)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Have other members cosign the latest checkpoint.

    Each cosigns once it has checked that this log extends, unchanged, the last checkpoint it
    cosigned."""
    from dataspace.services import witness

    result = witness.request_cosignatures(node(ctx), by or None)
    if as_json:
        print_json(result)
    else:
        rows = [[name, "cosigned" if r["cosigned"] else f"refused: {r['error']}"]
                for name, r in result["witnesses"].items()]
        console.print(table(f"checkpoint at size {result['size']}", ["witness", "result"], rows))
        print(result["checkpoint"], end="")
    if not any(r["cosigned"] for r in result["witnesses"].values()):
        raise Conflict("no witness cosigned the checkpoint",
                       hint="see each witness's reason above: one that did not answer may be "
                       "down; one that refused the proof saw another history of this log (a "
                       "fork or a rollback): run `dataspace ledger verify`")


@app.command("prove")
def prove(
    ctx: typer.Context,
    index: int = typer.Argument(None, help="Entry index (or use --latest)."),
    latest: str = typer.Option(
        None, "--latest", help="Prove the newest entry with this action, e.g. job.completed."
    ),
    out: Path = typer.Option(None, "--out", "-o", help="Write the bundle here instead of stdout."),
    since: int = typer.Option(
        None, "--from", metavar="SIZE", help="Prove instead that the log extends its log of "
        "SIZE entries unchanged (a consistency proof, to the latest checkpoint)."
    ),
) -> None:
    """Write an offline-verifiable proof of an entry, or (--from) of the log's consistency."""
    n = node(ctx)
    given = sum(x is not None for x in (index, latest, since))
    if given != 1:
        raise UsageError("give one of: an entry index, --latest ACTION, --from SIZE",
                         hint="e.g. `dataspace ledger prove 3`, `--latest job.completed`, or "
                         "`--from 120` (the size of a checkpoint you hold)")
    if index is not None and index < 0:
        raise UsageError(f"entry index {index} is negative", hint="entries count from 0")
    if since is not None:
        bundle, what = ledger.consistency_proof(n, since), f"consistency proof from size {since}"
    else:
        if latest is not None:
            index = ledger.latest_index(n, latest)
        assert index is not None
        bundle, what = ledger.inclusion_proof(n, index), f"inclusion proof for entry {index}"
    text = json.dumps(bundle, ensure_ascii=False, indent=2) + "\n"
    if out is None:
        print(text, end="")
    else:
        write_out(out, text)
        console.print(f"wrote {what} to {escape(str(out))}")


def _read_note(path: Path) -> str:
    return read_text_file(path, hint="pass a checkpoint note written by `ledger checkpoint`")


@app.command("verify")
def verify(
    ctx: typer.Context,
    checkpoint_files: list[Path] = typer.Option(
        None, "--checkpoint", help="A checkpoint note kept elsewhere; repeatable."
    ),
    key: str = typer.Option(
        None, "--key", help="The key the node published at its creation (string or file): "
        "check with it, not with the node's own key file."
    ),
    database: str = typer.Option(
        None, "--db", metavar="FILE|URL", help="Audit a copy of a node's state database (its "
        "state.db, or a postgresql:// URL) instead of a node: no node folder or private key "
        "needed; takes --key."
    ),
    schema: str = typer.Option(None, "--schema", help="With a PostgreSQL --db: the node's schema."),
    as_json: bool = JsonOption,
) -> None:
    """Recompute the tree from stored entries and check every stored (and given) checkpoint."""
    held = [_read_note(p) for p in checkpoint_files or []]
    published = key_text(key) if key is not None else None
    if database is None and schema is not None:
        raise UsageError("--schema goes with --db")
    if database is not None and published is None:
        raise UsageError("--db needs --key: the key the node published",
                         hint="e.g. --key bank-a.pub (the node's keys/node.pub, as published)")
    try:
        if database is not None:
            assert published is not None
            report = ledger.verify_copy(database, published, held, schema)
        else:
            report = ledger.verify(node(ctx), held, published)
    except LedgerTampered as exc:
        problems = exc.details.get("problems", [])
        if as_json:  # the problems for a program to read, as the API answers them
            print_json({"ok": False, "error": exc.to_dict()})
            raise
        err_console.print(
            table(
                "ledger problems",
                ["index", "kind", "reason"],
                [[p.get("index"), p.get("kind"), p.get("reason")] for p in problems],
            )
        )
        raise
    if as_json:
        print_json(report)
        return
    console.print(
        f"[green]ledger verified[/green]: {report['size']} entries, "
        f"{report['checkpoints_checked']} checkpoints, root {report['root']}"
    )
