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


def test_rewriting_the_index_keeps_hand_written_status_notes(tmp_path: Path) -> None:
    from dataspace.scenarios.docs import READING, write_index

    write_index(tmp_path)  # no index yet: every status is the default
    text = (tmp_path / "index.md").read_text(encoding="utf-8")
    assert READING in text and text.count("| runs now |") == len(scenarios.names())
    name = scenarios.names()[2]
    note = "runs now (a note; `with code`)"
    lines = [line.replace("| runs now |", f"| {note} |  ")  # trailing blanks, as editors leave
             if line.startswith(f"| [{name}](") else line for line in text.splitlines()]
    (tmp_path / "index.md").write_text("\n".join(lines), encoding="utf-8")
    write_index(tmp_path)
    again = (tmp_path / "index.md").read_text(encoding="utf-8").splitlines()
    [row] = [line for line in again if line.startswith(f"| [{name}](")]
    assert row.endswith(f"| {note} |")  # kept, on its own row
    assert sum(line.endswith("| runs now |") for line in again) == len(scenarios.names()) - 1


def test_the_committed_index_says_how_to_read_a_result() -> None:
    from dataspace.scenarios.docs import READING

    assert READING in (DOCS / "index.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", [s.name for s in scenarios.all() if s.public_data])
def test_a_scenario_with_public_data_documents_that_run_too(name: str) -> None:
    from dataspace.scenarios import public

    text = (DOCS / f"{name}.md").read_text(encoding="utf-8")
    real = text.split(f"## Real public data (`dataspace demo {name} --data public`)")[1]
    assert public.about(name) in real and "(real data: scikit-learn" in real
