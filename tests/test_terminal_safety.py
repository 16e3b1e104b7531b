"""Strings from outside reach the terminal as text: Rich markup in them is printed, not parsed (a stray ``[/]``
used to raise MarkupError after the work was committed), and terminal control sequences (CSI, OSC) are shown
escaped instead of driving the user's terminal."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from facecurate.catalog import Catalog
from facecurate.cli import app
from facecurate.crawl.queries import add_terms
from facecurate.output import clean
from facecurate.workspace import Workspace
from tests.fakeweb import FakeEngines, Item, write_config

CSI = "\x1b[2J"                       # clear the screen
OSC = "\x1b]8;;http://evil.example/\x07"  # an invisible hyperlink
HOSTILE = f"[/] [bold]x{CSI}{OSC}y\u202e"
runner = CliRunner()


def _assert_safe(output: str) -> None:
    assert "\x1b" not in output and "\x07" not in output and "\u202e" not in output
    assert "\\x1b" in output  # shown, escaped, where it was


def test_clean_escapes_controls_and_keeps_ordinary_text():
    assert clean("plain ü 漢字 [/]") == "plain ü 漢字 [/]"
    assert clean("a\x1b[31mb\nc\u202ed") == "a\\x1b[31mb\\x0ac\\u202ed"


def test_a_term_with_markup_and_escapes_is_listed_as_text(ws: Workspace):
    w = ["-w", str(ws.root)]
    added = runner.invoke(app, ["queries", "add", "--label", "faces", HOSTILE, *w])
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["queries", "list", *w], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    _assert_safe(listed.output)
    assert "[/] [bold]x" in listed.output


def test_a_label_with_markup_is_refused_in_a_safe_message(ws: Workspace):
    result = runner.invoke(app, ["queries", "add", "--label", f"a[/]{CSI}b", "term", "-w", str(ws.root)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    _assert_safe(result.output)
    assert "cannot name a file" in result.output


def test_a_file_name_with_markup_and_escapes_is_reported_as_text(ws: Workspace, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    name = f"[bold]{CSI}bad[red]\x1b]0;title\x07.jpg"  # no "/" in a file name, so no closing tag here
    (folder / name).write_bytes(b"<html>not an image</html>")
    result = runner.invoke(app, ["import", str(folder), "-w", str(ws.root)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    _assert_safe(result.output)
    assert "[bold]" in result.output and "bad[red]" in result.output


def test_a_skipped_linked_folder_with_escapes_is_reported_as_text(ws: Workspace, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / f"[bold]{CSI}linked\x1b]0;title\x07").symlink_to(tmp_path, target_is_directory=True)
    result = runner.invoke(app, ["import", str(folder), "-w", str(ws.root)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    _assert_safe(result.output)
    assert "not followed" in result.output and "[bold]" in result.output


@pytest.fixture
def engines() -> FakeEngines:
    url = f"http://img.example/{HOSTILE}.jpg".replace(" ", "%20")
    fake = FakeEngines({"hostile": [Item(url, "http://page.example/", f"title {HOSTILE}")]})
    with fake.server:
        yield fake


def test_a_crawled_url_with_escapes_is_listed_as_text(ws: Workspace, catalog: Catalog, engines: FakeEngines):
    write_config(ws.root, engines.server.base)
    add_terms(ws, catalog, "faces", ["hostile"])
    result = runner.invoke(app, ["crawl", "-e", "bing", "--dry-run", "-w", str(ws.root)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "img.example" in result.output  # the URL was listed
    _assert_safe(result.output)


def test_our_own_multi_line_messages_keep_their_lines(tmp_path: Path):
    result = runner.invoke(app, ["init", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("Workspace ready at") and lines[1].lstrip().startswith("settings: facecurate.toml")
    assert "\\x0a" not in result.output
