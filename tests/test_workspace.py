"""Workspace discovery, facecurate.toml and the versioned catalog."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from facecurate.catalog import Catalog
from facecurate.catalog import migrations as catalog_mod
from facecurate.errors import CatalogError, ConfigError, WorkspaceError
from facecurate.workspace import ENV_VAR, SETTINGS, Workspace, find_workspace, init_workspace


def test_init_writes_every_default_with_its_reason(tmp_path: Path):
    ws = init_workspace(tmp_path / "new")
    text = ws.config_path.read_text()
    for s in SETTINGS:
        assert f"{s.key} = " in text and s.doc in text, s.key
    assert ws.queries_dir.is_dir() and ws.catalog_path.is_file()
    cfg = ws.config()
    assert all(cfg.get(s.section, s.key) == s.default for s in SETTINGS)


def test_init_keeps_an_edited_config(tmp_path: Path):
    ws = init_workspace(tmp_path / "w")
    ws.config_path.write_text("[crop]\nsize = 256\n")
    init_workspace(tmp_path / "w")
    assert ws.config().get("crop", "size") == 256


def test_config_type_and_choice_errors_name_the_setting(ws: Workspace):
    ws.config_path.write_text('[crop]\nsize = "big"\n')
    with pytest.raises(ConfigError, match=r"\[crop\] size"):
        ws.config()
    ws.config_path.write_text('[crop]\npadding = "zeros"\n')
    with pytest.raises(ConfigError, match="reflect_blur"):
        ws.config()
    ws.config_path.write_text("[crop\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        ws.config()


def test_find_workspace_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    a, b = init_workspace(tmp_path / "a"), init_workspace(tmp_path / "b")
    (a.root / "sub" / "dir").mkdir(parents=True)
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert find_workspace(cwd=a.root / "sub" / "dir").root == a.root  # parents are searched
    monkeypatch.setenv(ENV_VAR, str(b.root))
    assert find_workspace(cwd=a.root).root == b.root                  # env beats the current folder
    assert find_workspace(a.root).root == a.root                      # --workspace beats env


def test_no_workspace_says_how_to_make_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(WorkspaceError, match="facecurate init"):
        find_workspace(cwd=tmp_path)


def test_catalog_is_wal_and_versioned(ws: Workspace):
    with Catalog.open(ws.catalog_path) as cat:
        assert cat.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cat.schema_version == len(catalog_mod.MIGRATIONS)


def test_migration_steps_run_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "old.db"
    monkeypatch.setattr(catalog_mod, "MIGRATIONS", catalog_mod.MIGRATIONS[:1])
    Catalog.create(path).close()
    extra = "ALTER TABLE images ADD COLUMN note TEXT; -- a later release's step\nCREATE TABLE t (x INTEGER);"
    monkeypatch.setattr(catalog_mod, "MIGRATIONS", (*catalog_mod.MIGRATIONS, extra))
    with Catalog.open(path) as cat:
        assert cat.schema_version == 2  # the one step it had, then the new one
        cols = {r[1] for r in cat.conn.execute("PRAGMA table_info(images)")}
        assert "note" in cols


def test_a_failed_migration_leaves_the_old_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "c.db"
    Catalog.create(path).close()
    current = len(catalog_mod.MIGRATIONS)
    monkeypatch.setattr(catalog_mod, "MIGRATIONS", (*catalog_mod.MIGRATIONS, "CREATE TABLE ok (x);\nNOT SQL;"))
    with pytest.raises(CatalogError, match="syntax error"):  # named, with the catalog's path, not a traceback
        Catalog.open(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == current
    assert not conn.execute("SELECT name FROM sqlite_master WHERE name='ok'").fetchall()


def test_newer_catalog_is_refused(tmp_path: Path):
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(CatalogError, match="newer"):
        Catalog.open(path)
