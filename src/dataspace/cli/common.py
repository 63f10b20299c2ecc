"""What every command group shares: the node option, JSON output, tables."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from dataspace.cli.lazy import lazy_module
from dataspace.errors import InputError, UsageError

if TYPE_CHECKING:
    import pyarrow as pa

    from dataspace.services import node as node_service
    from dataspace.services.node import Node
else:
    node_service = lazy_module("dataspace.services.node")

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

ForceOption = typer.Option(False, "--force", help="Replace the --out file if it exists.")
def remember_json(value: bool) -> bool:
    """--json was parsed as the flag (not as another option's value): errors go out as JSON."""
    if value:
        JSON_ASKED[0] = True
    return value


JSON_ASKED = [False]  # set while a command runs; main() reads it when an error ends one
JsonOption = typer.Option(False, "--json", help="Print JSON instead of a table.",
                          callback=remember_json)


class CliState:
    """Carried in the Typer context: the --node given at the top, opened on first use."""

    def __init__(self, node_dir: str | None) -> None:
        self.node_dir = node_dir
        self._node: Node | None = None

    def node(self) -> Node:
        if self._node is None:
            self._node = node_service.open_node(self.node_dir)
        return self._node


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState(None)
    return root.obj


def node(ctx: typer.Context) -> Node:
    """The command's node, opened once and closed (its database pool too) when the command ends."""
    cli_state = state(ctx)
    if cli_state._node is None:
        opened = cli_state.node()
        ctx.find_root().call_on_close(opened.close)
        return opened
    return cli_state.node()


def actor() -> str:
    return node_service.default_actor()


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left", show_lines=False)
    for col in columns:
        t.add_column(col)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    return t


def key_text(value: str) -> str:
    """A key given as a file holding it, or as the string itself."""
    path = Path(value)
    if not path.is_file():
        if "+" not in value:  # every key string is NAME+ID+KEY
            raise InputError(f"{value!r} is neither a file nor a key string",
                             hint="pass a public key file (a node.pub) or the key string "
                             "NAME+ID+KEY")
        return value.strip()
    text = read_text_file(path, hint="pass a public key file (a node.pub) or the key string"
                          ).strip()
    pem = text.startswith("-----BEGIN")  # the key parser says which kind, never its lines
    if not pem and ("+" not in text or any(c.isspace() for c in text)):  # no NAME+ID+KEY
        raise InputError(f"{path} does not hold a public key (one line NAME+ID+KEY)",
                         hint="pass the node's keys/node.pub, or the key string itself")
    return text


def read_text_file(path: Path, hint: str) -> str:
    """A UTF-8 text file named on the command line, or an InputError saying why not."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise InputError(f"cannot read {path}: {reason}", hint=hint) from None


def write_out(path: Path, text: str) -> None:
    """Write a command's ``--out`` file whole or not at all (staged beside it and moved into
    place), or say clearly why it cannot be written."""
    from dataspace.scratch import staging_path

    staged = staging_path(path)
    try:
        staged.write_text(text, encoding="utf-8")
        os.replace(staged, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            staged.unlink(missing_ok=True)
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise InputError(f"cannot write {path}: {exc.strerror or exc}",
                         hint="free space on that disk, or pass --out a path on another" if full
                         else "pass --out a path in a directory that exists and you may "
                         "write to") from None


def check_out(out: Path | None, suffixes: tuple[str, ...], *, force: bool) -> None:
    """Refuse an ``--out`` the result could not be written to, before the command does its
    work: a job's result is paid for, may spend privacy budget, and is not sent twice. A file
    already there is replaced only with ``--force`` (it may be an earlier, paid-for answer)."""
    if out is None:
        return
    kinds = " or ".join(suffixes)
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder", hint=f"name a {kinds} file in it")
    if out.exists() and not force:
        raise UsageError(f"--out {out} exists",
                         hint="add --force to replace it, or name another file")
    if out.suffix.lower() not in suffixes:
        raise UsageError(f"--out {out}: name a {kinds} file", hint="its suffix is its format")
    folder = out.parent
    if not folder.is_dir():
        raise UsageError(f"--out {out}: the folder {folder} does not exist",
                         hint="create it first, or name a file in a folder that exists")
    if not os.access(folder, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UsageError(f"--out {out}: you may not write there",
                         hint="name a file in a folder you may write to")


def write_table(table: pa.Table, out: Path) -> None:
    """Write ``table`` to ``out`` as its suffix says (.csv, else Parquet), whole or not at all:
    staged beside it and moved into place."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from dataspace.scratch import staging_path

    staged = staging_path(out)
    try:
        if out.suffix.lower() == ".csv":
            pacsv.write_csv(table, staged)
        else:
            pq.write_table(table, staged)
        os.replace(staged, out)
    except (OSError, pa.ArrowException) as exc:
        with contextlib.suppress(OSError):
            staged.unlink(missing_ok=True)
        hint = ("free space or name a file in a folder you may write to"
                if isinstance(exc, OSError) else  # else Arrow cannot write a column's type
                f"a {out.suffix} file cannot hold a column of this type; try .parquet "
                "(lists, structs) or cast the column in the SQL")
        raise InputError(f"cannot write {out}: {exc}", hint=hint) from None


def read_json_file(path: Path, what: str, hint: str) -> Any:
    """A JSON file given on the command line, or an InputError saying what is wrong with it
    (:func:`dataspace.jsondoc.parse_json`: also too deep, or not Unicode text)."""
    from dataspace.jsondoc import NotJson, parse_json

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path} does not exist", hint=hint) from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}", hint=hint) from None
    try:
        return parse_json(raw)
    except NotJson as exc:
        raise InputError(f"{path} {exc}: not {what}", hint=hint) from None

