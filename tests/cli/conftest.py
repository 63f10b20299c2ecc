from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dataspace.cli.main import app


class Result:
    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run the real `dataspace` entry point in-process; returns exit code, stdout, stderr."""
    from dataspace.cli.main import main

    monkeypatch.delenv("DATASPACE_NODE", raising=False)

    def run(*args: str | Path) -> Result:
        import contextlib
        import io

        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            # Rich consoles bound to sys.stdout at import; rebind for capture.
            from dataspace.cli import common

            common.console.file = out
            common.err_console.file = err
            try:
                main([str(a) for a in args])
            except SystemExit as exc:
                code = int(exc.code or 0)
            finally:
                common.console.file = None  # type: ignore[assignment]
                common.err_console.file = None  # type: ignore[assignment]
        return Result(code, out.getvalue(), err.getvalue())

    return run


__all__ = ["CliRunner", "app"]
