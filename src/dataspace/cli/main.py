"""The `dataspace` command: one Typer app, one module per command group.

Errors are handled here only: a DataspaceError prints one line (and a hint) to stderr and exits
with the error's stable exit code.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
from typing import NoReturn

import typer
from rich.markup import escape

from dataspace import __version__
from dataspace.cli import (
    contract,
    dataset,
    demo,
    ledger,
    mp,
    node_cmd,
    offer,
    query,
    space,
    token,
    train,
    transfer,
    usage,
)
from dataspace.cli.common import CliState, err_console
from dataspace.cli.help_types import install as install_help_types
from dataspace.errors import DataspaceError
from dataspace.settings import ENV_NODE

# The interpreter's last garbage collection at exit walks every object the imported modules
# made: about 0.5 s of CPU for a node server, which has some 1,200 of them. None of it is
# garbage then, so freeze it first (finalizers of what is still alive run all the same).
atexit.register(gc.freeze)
install_help_types()

app = typer.Typer(
    name="dataspace",
    help="A trusted data space node: register data, keep a verifiable log, share under policy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    node_dir: str = typer.Option(
        None, "--node", envvar=ENV_NODE, help="The node's directory.", metavar="DIR"
    ),
) -> None:
    ctx.obj = CliState(node_dir)


def _version() -> None:
    print(__version__)


app.command("version", help="Print the version.")(_version)
node_cmd.register(app)
app.add_typer(dataset.app, name="dataset")
app.add_typer(token.app, name="token")
app.add_typer(ledger.app, name="ledger")
app.add_typer(space.app, name="space")
usage.register(app)
demo.register(app)
query.register(app)
mp.register(app, query.job_app)
train.register(app, query.job_app)
app.add_typer(offer.app, name="offer")
app.add_typer(contract.app, name="contract")
app.command("catalog")(contract.catalog)
app.add_typer(transfer.app, name="transfer")


ENV_TRACEBACK = "DATASPACE_TRACEBACK"  # set: an unexpected error shows its traceback
INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; click handles usage errors, DataspaceError is reported here, and anything
    unexpected as one line too (a bug: the traceback is there for the asking)."""
    from dataspace.cli.common import JSON_ASKED

    JSON_ASKED[0] = False
    try:
        app(args=argv, prog_name="dataspace")  # click reports usage errors and Ctrl-C
    except DataspaceError as exc:
        if JSON_ASKED[0]:  # a program reads stderr too: the API's own envelope
            import json

            sys.stderr.write(json.dumps({"error": exc.to_dict()}, ensure_ascii=False,
                                        default=str) + "\n")
            sys.exit(exc.exit_code)
        _say(exc.message, exc.hint, exc.exit_code)
    except Exception as exc:
        if os.environ.get(ENV_TRACEBACK):
            raise
        from_engine = (type(exc).__module__.lstrip("_").startswith("duckdb")
                       or type(exc) is RuntimeError)  # how DuckDB reports a Ctrl-C it caught
        if from_engine and "interrupted" in str(exc).lower():
            _say("interrupted", None, INTERRUPTED)
        _say(f"unexpected {type(exc).__name__}: {exc}",
             f"this is a bug in dataspace; run again with {ENV_TRACEBACK}=1 and report the "
             "traceback", 1)


def _say(message: str, hint: str | None, code: int) -> NoReturn:
    err_console.print(f"[red]error:[/red] {escape(message)}")
    if hint:
        err_console.print(f"  {hint}", markup=False)
    sys.exit(code)


if __name__ == "__main__":
    main()
