"""docs/scenarios/ has one page per scenario naming its metric, and an index."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataspace import scenarios

DOCS = Path(__file__).resolve().parents[2] / "docs" / "scenarios"


@pytest.mark.parametrize("name", scenarios.names())
def test_each_scenario_has_a_page_naming_its_metric(name: str) -> None:
    text = (DOCS / f"{name}.md").read_text(encoding="utf-8")
    s = scenarios.get(name)
    assert s.metric_name in text and s.sector_label in text


def test_the_index_lists_every_scenario() -> None:
    text = (DOCS / "index.md").read_text(encoding="utf-8")
    for name in scenarios.names():
        assert f"({name}.md)" in text


def test_demo_list_prints_one_line_per_scenario() -> None:
    import typer
    from typer.testing import CliRunner

    from dataspace.cli import demo

    app = typer.Typer()
    demo.register(app)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["demo", "--list"])
    assert result.exit_code == 0
    assert len(result.output.strip().splitlines()) == len(scenarios.names())
