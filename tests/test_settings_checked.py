"""Issue 13, must-haves 6 and 7: settings are checked when read, and a damaged catalog is never replaced.

A bad facecurate.toml or a missing/empty/truncated/foreign facecurate.db must stop every command with one
paragraph naming the key or file, before any stage starts and without changing a byte of the workspace."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facecurate.catalog import Catalog
from facecurate.cli import app
from facecurate.errors import CatalogError, ConfigError
from facecurate.faces.crop import CropOptions, run_crop
from facecurate.ingest import import_paths
from facecurate.workspace import SETTINGS, Workspace, check_value, render_default_toml
from tests.fakeweb import write_config

runner = CliRunner()

# Every command that opens a workspace, with arguments that would make it work if the workspace were sound.
COMMANDS: list[list[str]] = [
    ["status"], ["queries", "list"], ["queries", "add", "red lipstick"], ["crawl", "--dry-run"],
    ["import", "{photos}"], ["dedup"], ["crop", "--redo", "--device", "cpu"], ["filter"], ["export"],
    ["review", "--list"], ["run", "--device", "cpu"],
]


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under the workspace with a hash of its bytes: "changes nothing" made checkable."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


def _invoke(ws: Workspace, command: list[str], photos: Path) -> tuple[int, str]:
    args = [a.replace("{photos}", str(photos)) for a in command]
    result = runner.invoke(app, [*args, "-w", str(ws.root)])
    return result.exit_code, result.stderr + result.stdout


def _one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def photos(tmp_path: Path, demo_dir: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(demo_dir / "obama.jpg", folder / "obama.jpg")
    return folder


# -- the settings table ------------------------------------------------------------------------------------


def test_every_setting_has_a_type_and_numbers_a_range_its_default_meets():
    for s in SETTINGS:
        assert type(s.default) in (bool, int, float, str), s.key
        if isinstance(s.default, (int, float)) and not isinstance(s.default, bool):
            if (s.section, s.key) != ("rules", "no_headroom"):  # a signed distance: any finite value
                assert s.min is not None or s.max is not None, f"[{s.section}] {s.key} has no range"
            assert s.min is None or (s.default > s.min if s.above else s.default >= s.min), s.key
            assert s.max is None or s.default <= s.max, s.key
        if s.choices:
            assert s.default in s.choices, s.key
    toml = render_default_toml()
    assert "Range: at least 1 and at most 256." in toml  # crawl.concurrency, documented where it is set


# The cases the issue lists, each refused with the key and the file named.
BAD = [
    ("[crawl]\nconcurrency = 0\n", "[crawl] concurrency = 0", "at least 1"),
    ("[crop]\nbatch_size = 0\n", "[crop] batch_size = 0", "at least 1"),
    ("[review]\nport = 70000\n", "[review] port = 70000", "at most 65535"),
    ("[crop]\nsize = 0\n", "[crop] size = 0", "at least 16"),
    ("[media]\nmax_pixels = -1\n", "[media] max_pixels = -1", "at least 1"),
    ("[export]\nval_fraction = 2.5\n", "[export] val_fraction = 2.5", "at most 1"),
    ("[crawl]\npage_dealy = 5\n", "[crawl] has no setting 'page_dealy'", "Did you mean page_delay?"),
]


@pytest.mark.parametrize(("text", "names", "says"), BAD, ids=[b[1] for b in BAD])
def test_a_bad_setting_stops_every_command_before_anything_changes(ws: Workspace, photos: Path, text: str,
                                                                   names: str, says: str):
    ws.config_path.write_text(text, encoding="utf-8")
    before = _snapshot(ws.root)
    for command in COMMANDS:
        code, out = _invoke(ws, command, photos)
        flat = _one_line(out)
        assert code == 1, (command, out)
        assert names in flat and says in flat and str(ws.config_path) in flat, (command, out)
        assert "Traceback" not in out and len(out.strip().splitlines()) == 1, (command, out)  # one paragraph
        assert _snapshot(ws.root) == before, command  # no stage started: not a byte changed
    assert _init_refuses(ws)


def _init_refuses(ws: Workspace) -> bool:
    """init completes a workspace, but not one whose settings are wrong: it says so as the others do."""
    result = runner.invoke(app, ["init", str(ws.root)])
    return result.exit_code == 1 and str(ws.config_path) in _one_line(result.stderr)


@pytest.mark.parametrize(("text", "says"), [
    ("[crwal]\nlimit = 5\n", "[crwal] is not a facecurate section. Did you mean [crawl]?"),
    ("[crop]\npage_delay = 1.0\n", "page_delay is a setting of [crawl]: move it under that header"),
    ("[crawl]\nconcurency = 4\n", "Did you mean concurrency?"),
    ("page_dealy = 5\n", "Did you mean page_delay in [crawl]?"),
    ("[engines.bign]\nbase_url = \"http://127.0.0.1:1\"\n", "Did you mean [engines.bing]?"),
    ("[engines.bing]\nbase_ur = \"http://127.0.0.1:1\"\n", "Did you mean base_url?"),
    ("[engines.bing]\nproxy = \"http://127.0.0.1:1\"\n", "[engines.bing] has no setting 'proxy'"),
    ("[rules]\ngreyscale = 2.0\n", "Did you mean grayscale?"),
    ("[rules]\nblurry = -1.0\n", "[rules] blurry = -1.0 is out of range"),
    ("[crawl]\nread_timeout = 0\n", "must be above 0"),
    ("[crawl]\ntotal_timeout = inf\n", "should be a finite number"),
    ("[dedup]\nmin_similarity = nan\n", "should be a finite number"),
    ("[crop]\nsize = 256.0\n", "should be a whole number"),
    ("[crawl]\nlimit = true\n", "should be a whole number"),
    ("[crop]\ndevice = \"cdua\"\n", "is not one of auto, cpu, cuda. Did you mean cuda?"),
    ("[crawl]\nengines = \"bing,gogle\"\n", "names 'gogle', which is not one of bing,"),
    ("[rules]\nenabled = \"grayscale, blury\"\n", "Did you mean blurry?"),
])
def test_config_errors_name_the_key_and_the_closest_right_name(ws: Workspace, text: str, says: str):
    ws.config_path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        ws.config()
    message = str(caught.value)
    assert says in message and str(ws.config_path) in message and "\n" not in message


def test_comma_list_names_are_the_engines_and_rules_that_exist():
    from facecurate.crawl.engines import ENGINES
    from facecurate.rules.registry import RULES

    rows = {(s.section, s.key): s for s in SETTINGS}
    engine_sections = list(dict.fromkeys(s.section.split(".", 1)[1] for s in SETTINGS
                                         if s.section.startswith("engines.")))
    assert list(rows["crawl", "engines"].items) == list(ENGINES) == engine_sections
    assert list(rows["rules", "enabled"].items) == ["all", *(r.name for r in RULES)]


def test_values_in_range_and_sections_the_table_defines_are_read(ws: Workspace):
    ws.config_path.write_text('[crawl]\nconcurrency = 1\nper_host_rate = 0\nengines = "Bing, wikimedia"\n'
                              '[review]\nport = 0\n'
                              '[engines.wikimedia]\nbase_url = "http://127.0.0.1:9"\n'
                              '[rules]\nenabled = "grayscale,blurry"\nno_headroom = -0.5\n', encoding="utf-8")
    cfg = ws.config()
    assert cfg.get("crawl", "concurrency") == 1 and cfg.get("review", "port") == 0
    assert cfg.get("crawl", "per_host_rate") == 0.0 and isinstance(cfg.get("crawl", "per_host_rate"), float)
    assert cfg.engine("wikimedia")["base_url"] == "http://127.0.0.1:9"
    assert cfg.engine("bing")["base_url"] == "https://www.bing.com"  # the others keep their defaults
    assert cfg.get("rules", "no_headroom") == -0.5 and cfg.get("rules", "enabled") == "grayscale,blurry"


def test_the_configs_the_tests_write_are_valid(ws: Workspace):
    """tests/fakeweb.write_config (every crawl test's facecurate.toml) and the [crop] lines tests append."""
    write_config(ws.root, "http://127.0.0.1:1", concurrency=4, per_host=4, max_bytes=200_000)
    with ws.config_path.open("a", encoding="utf-8") as fh:
        fh.write('[crop]\nsize = 128\ndevice = "cpu"\n')
    cfg = ws.config()
    assert cfg.get("crawl", "page_delay") == 0.0 and cfg.get("crop", "size") == 128
    assert cfg.engine("naver")["base_url"] == "http://127.0.0.1:1"


def test_command_line_overrides_meet_the_same_ranges(ws: Workspace, photos: Path):
    with pytest.raises(ConfigError, match=r"the command line: \[crop\] size = 0 is out of range"):
        CropOptions.from_config(ws, size=0)
    assert CropOptions.from_config(ws, size=64).size == 64
    with pytest.raises(ConfigError, match=r"the command line \(--port\): \[review\] port = 70000 is out of range"):
        check_value("review", "port", 70000, "--port")
    assert check_value("review", "port", 0, "--port") == 0
    code, out = _invoke(ws, ["crop", "--batch-size", "0", "--device", "cpu"], photos)
    assert code == 1 and "[crop] batch_size = 0 is out of range" in _one_line(out) and "Traceback" not in out


# -- the catalog: created only by init -----------------------------------------------------------------------


def _sqlite_sidecars(ws: Workspace) -> list[str]:
    return sorted(p.name for p in ws.root.iterdir() if p.name.startswith("facecurate.db-"))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 8 * 4096  # a real catalog: many pages
    path.write_bytes(data[:len(data) // 2 + 100])


def _damage(ws: Workspace, how: str) -> None:
    path = ws.catalog_path
    if how == "missing":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        _truncate(path)
    elif how == "short header":
        path.write_bytes(path.read_bytes()[:60])
    elif how == "not sqlite":
        path.write_bytes(b"name,score\nobama,0.9\n" * 100)
    elif how == "other program's database":
        path.unlink()
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('mine')")
        conn.commit()
        conn.close()


DAMAGE = {"missing": "No catalog at", "empty": "is empty (0 bytes)", "truncated": "is truncated",
          "short header": "is truncated", "not sqlite": "is not an SQLite database",
          "other program's database": "another program's SQLite database"}


@pytest.fixture
def filled(ws: Workspace, photos: Path) -> Workspace:
    """A workspace whose catalog holds something (a query, a photo), checkpointed and closed."""
    for args in (["queries", "add", "red lipstick", "smoky eye"], ["import", str(photos)]):
        assert runner.invoke(app, [*args, "-w", str(ws.root)]).exit_code == 0
    assert _sqlite_sidecars(ws) == []  # the last connection closed cleanly: no WAL left behind
    return ws


@pytest.mark.parametrize("how", list(DAMAGE))
def test_a_damaged_catalog_stops_every_command_and_stays_byte_identical(filled: Workspace, photos: Path, how: str):
    ws = filled
    _damage(ws, how)
    before = _snapshot(ws.root)
    for command in COMMANDS:
        code, out = _invoke(ws, command, photos)
        flat = _one_line(out)
        assert code == 1, (command, out)
        assert DAMAGE[how] in flat and str(ws.catalog_path) in flat and "Traceback" not in out, (command, out)
        assert _snapshot(ws.root) == before, command
        assert _sqlite_sidecars(ws) == [], command  # SQLite never touched it: no -wal, no -shm
    if how == "missing":  # init is the one command that creates a catalog
        assert runner.invoke(app, ["init", str(ws.root)]).exit_code == 0
        assert runner.invoke(app, ["status", "-w", str(ws.root)]).exit_code == 0
    else:  # and it does not "repair" a damaged one into an empty one either
        result = runner.invoke(app, ["init", str(ws.root)])
        assert result.exit_code == 1 and DAMAGE[how] in _one_line(result.stderr)
        assert _snapshot(ws.root) == before


def test_catalog_open_refuses_what_only_create_may_make(tmp_path: Path):
    path = tmp_path / "c.db"
    with pytest.raises(CatalogError, match="No catalog at"):
        Catalog.open(path)
    assert not path.exists()
    Catalog.create(path).close()
    with Catalog.open(path) as cat:  # once made, the default opens it
        assert cat.schema_version > 0
    fifo = tmp_path / "fifo.db"
    os.mkfifo(fifo)
    with pytest.raises(CatalogError, match="not a regular file"):  # refused, not waited on
        Catalog.open(fifo, create=True)


def test_a_catalog_an_interrupted_init_left_blank_is_completed_by_init_only(ws: Workspace):
    ws.catalog_path.unlink()
    conn = sqlite3.connect(ws.catalog_path)
    conn.execute("PRAGMA journal_mode=WAL")  # what init's first statement leaves if it is killed right there
    conn.close()
    before = ws.catalog_path.read_bytes()
    result = runner.invoke(app, ["status", "-w", str(ws.root)])
    assert result.exit_code == 1 and "never initialised" in _one_line(result.stderr)
    assert ws.catalog_path.read_bytes() == before
    assert runner.invoke(app, ["init", str(ws.root)]).exit_code == 0
    assert runner.invoke(app, ["status", "-w", str(ws.root)]).exit_code == 0


def test_a_catalog_with_its_write_ahead_log_still_opens(filled: Workspace):
    """Another command holding the catalog mid-write: the main file may lag its header; that is not damage."""
    with Catalog.open(filled.catalog_path) as holder:
        holder.conn.execute("PRAGMA wal_autocheckpoint = 0")
        with holder.transaction() as conn:
            conn.execute("CREATE TABLE scratch (x BLOB)")
            conn.executemany("INSERT INTO scratch VALUES (?)", [(os.urandom(2000),) for _ in range(200)])
        assert os.path.getsize(f"{filled.catalog_path}-wal") > 0
        result = runner.invoke(app, ["status", "--json", "-w", str(filled.root)])
        assert result.exit_code == 0, result.stderr


# -- crop --redo replaces a face row only with a computed one ------------------------------------------------


def test_redo_keeps_faces_when_their_replacement_cannot_be_computed(ws: Workspace, photos: Path):
    with Catalog.open(ws.catalog_path) as catalog:
        import_paths(ws, catalog, [photos])
        opts = CropOptions.from_config(ws, size=64, device="cpu")
        first = run_crop(ws, catalog, opts)
        assert first.faces == 1
        before = [tuple(r) for r in catalog.conn.execute("SELECT * FROM faces ORDER BY id")]
        (raw,) = [r[0] for r in catalog.conn.execute("SELECT path FROM images")]
        ws.resolve(raw).write_bytes(b"\xff\xd8\xff\xe0 not a jpeg any more")  # the photo rotted on disk
        again = run_crop(ws, catalog, opts, redo=True)
        assert [f.item for f in again.failed] == [raw] and "earlier faces are kept" in again.failed[0].error
        assert [tuple(r) for r in catalog.conn.execute("SELECT * FROM faces ORDER BY id")] == before
        assert catalog.conn.execute("SELECT crop_state FROM images").fetchone()[0] == "done"
