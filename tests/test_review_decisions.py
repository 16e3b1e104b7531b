"""The decision log, export honouring it, and the terminal / static reports — without a browser."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from facecurate.catalog import Catalog
from facecurate.cli import app
from facecurate.export import export
from facecurate.review import decisions, report
from facecurate.review.items import Target, resolve_targets
from facecurate.workspace import Workspace
from tests.test_review_support import XSS, faces_by_name, reviewed_workspace


@pytest.fixture
def rws(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Workspace:
    return reviewed_workspace(tmp_path_factory, tmp_path / "ws")


@pytest.fixture
def cat(rws: Workspace):
    catalog = Catalog.open(rws.catalog_path)
    yield catalog
    catalog.close()


def _target(catalog: Catalog, name: str) -> Target:
    targets, _ = resolve_targets(catalog, [f"f{faces_by_name(catalog)[name]['id']}"])
    return targets[0]


def _decision(catalog: Catalog, name: str) -> str:
    t = _target(catalog, name)
    return catalog.review_latest().get((t.image_id, t.face_index), {"decision": "none"})["decision"]


def test_decisions_append_and_undo_walks_back_one_key_press_at_a_time(cat: Catalog):
    a, b, c = (_target(cat, n) for n in ("biden.jpg", "obama3.jpg", "obama.jpg"))
    first, changes = decisions.decide(cat, [a], "kept", "ann", "s1")
    assert first is not None and [(ch.before, ch.after) for ch in changes] == [("none", "kept")]
    decisions.decide(cat, [a], "rejected", "ann", "s1")
    bulk, changes = decisions.decide(cat, [b, c, b], "rejected", "ann", "s1")  # a selection: one batch
    assert len(changes) == 2
    assert decisions.decide(cat, [b], "rejected", "ann", "s1") == (None, [])  # no-op: nothing appended
    assert _decision(cat, "obama3.jpg") == "rejected" and _decision(cat, "biden.jpg") == "rejected"

    undone, changes = decisions.undo(cat, "bob", "s2")  # takes back the whole bulk press
    assert undone == bulk and {(ch.before, ch.after) for ch in changes} == {("rejected", "none")}
    assert _decision(cat, "obama3.jpg") == "none" and _decision(cat, "obama.jpg") == "none"
    decisions.undo(cat, "bob", "s2")
    assert _decision(cat, "biden.jpg") == "kept"
    decisions.undo(cat, "bob", "s2")
    assert _decision(cat, "biden.jpg") == "none"
    assert decisions.undo(cat, "bob", "s2") == (None, [])

    log = cat.conn.execute("SELECT action, decision_before, decision_after, rule_status, reviewer, undoes "
                           "FROM review_log ORDER BY id").fetchall()
    assert [r["action"] for r in log] == ["keep", "reject", "reject", "reject", "undo", "undo", "undo", "undo"]
    assert log[0]["rule_status"] == "reject" and log[0]["reviewer"] == "ann" and log[-1]["reviewer"] == "bob"
    assert log[4]["undoes"] == bulk and log[-1]["undoes"] == first


def test_the_log_is_append_only(cat: Catalog):
    decisions.decide(cat, [_target(cat, "biden.jpg")], "kept", "ann", "s1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        cat.conn.execute("UPDATE review_log SET decision_after='rejected'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        cat.conn.execute("DELETE FROM review_log")


def test_a_decision_survives_crop_redo(cat: Catalog):
    """Items are (image, face index): crop --redo replaces face rows and their ids, not the decision."""
    t = _target(cat, "biden.jpg")
    decisions.decide(cat, [t], "kept", "ann", "s1")
    with cat.transaction():
        row = dict(cat.conn.execute("SELECT * FROM faces WHERE id=?", (int(t.key[1:]),)).fetchone())
        cat.conn.execute("DELETE FROM faces WHERE id=?", (row.pop("id"),))
        cat.conn.execute(f"INSERT INTO faces ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                         tuple(row.values()))
    assert _target(cat, "biden.jpg").key != t.key and _decision(cat, "biden.jpg") == "kept"


def test_unknown_and_faceless_keys_are_skipped(cat: Catalog):
    rocket = cat.conn.execute("SELECT id FROM images WHERE crop_state='no_face'").fetchone()[0]
    targets, skipped = resolve_targets(cat, ["f1", f"i{rocket}", "f99999", "../x", "f1"])
    assert [t.key for t in targets] == ["f1"] and skipped == [f"i{rocket}", "../x", "f99999"]


def test_export_follows_the_person_over_the_rules(rws: Workspace, cat: Catalog, tmp_path: Path):
    partial, biden, obama = (_target(cat, n) for n in ("obama_partial_face.jpg", "biden.jpg", "obama.jpg"))
    decisions.decide(cat, [partial], "kept", "tester", "s")      # rules said reject
    decisions.decide(cat, [obama], "rejected", "tester", "s")    # rules said keep
    decisions.decide(cat, [biden], "kept", "tester", "s")
    decisions.undo(cat, "tester", "s")                           # biden: back to the rules
    result = export(rws, cat, fmt="jsonl", out_dir=tmp_path / "out", layout="imagefolder")
    rows = {r["source_path"].rsplit("/", 1)[-1]: r for r in map(json.loads, result.manifest.read_text().splitlines())
            if r["source_path"]}
    assert rows["obama_partial_face.jpg"]["status"] == "keep"
    assert rows["obama_partial_face.jpg"]["reasons"] == ["mirroring", "no_headroom"]  # the rules' why stays
    assert rows["obama_partial_face.jpg"]["review"]["decision"] == "kept"
    assert rows["obama_partial_face.jpg"]["review"]["by"] == "tester" and rows["obama_partial_face.jpg"]["review"]["at"]
    assert rows["obama.jpg"]["status"] == "reject" and rows["obama.jpg"]["review"]["decision"] == "rejected"
    assert rows["biden.jpg"]["status"] == "reject" and rows["biden.jpg"]["review"] == {
        "decision": "none", "by": None, "at": None}
    # the layout follows the overridden status: 3 rule keeps - obama + partial
    kept = {m["sample_id"] for split in ("train", "val") if (tmp_path / "out" / split).is_dir()
            for m in pq.read_table(tmp_path / "out" / split / "metadata.parquet").to_pylist()}
    assert result.layout_files == 3 and rows["obama_partial_face.jpg"]["sample_id"] in kept
    assert rows["obama.jpg"]["sample_id"] not in kept


def test_list_groups_rejects_by_reason(rws: Workspace, cat: Catalog):
    decisions.decide(cat, [_target(cat, "biden.jpg")], "kept", "tester", "s")
    groups = {g.reason: g for g in report.reason_groups(cat)}
    assert set(groups) == {"mirroring", "no_headroom", "closed_eyes", "no_face"}
    assert (groups["mirroring"].count, groups["mirroring"].kept, groups["mirroring"].undecided) == (2, 1, 1)
    assert groups["no_face"].entries[0].name == "rocket_no_face.jpg"

    out = CliRunner().invoke(app, ["review", "--list", "-w", str(rws.root)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    line = next(x for x in out.output.splitlines() if "mirroring" in x)
    assert re.search(r"mirroring\s+│\s+2\s+│\s+1\s+│\s+0\s+│\s+1\s+│", line), line
    assert "biden.jpg" in line  # examples by the name a person knows the photo by, one a line
    assert "biden.jpg" in out.output and "rocket_no_face.jpg" in out.output
    as_json = CliRunner().invoke(app, ["review", "--list", "--json", "-w", str(rws.root)])
    report_json = json.loads(as_json.output)  # the ReasonReport record: its groups and the faces in all
    data = {g["reason"]: g for g in report_json["groups"]}
    assert data["closed_eyes"]["count"] == 1 and data["closed_eyes"]["examples"] == ["obama3.jpg"]
    assert data["mirroring"]["undecided"] == 1 and report_json["faces"] == 6 and "entries" not in data["mirroring"]


def test_html_report_is_one_file_with_escaped_strings(rws: Workspace, tmp_path: Path):
    out = tmp_path / "report" / "rejects.html"
    res = CliRunner().invoke(app, ["review", "--html", str(out), "-w", str(rws.root)])
    assert res.exit_code == 0, res.output
    html = out.read_text(encoding="utf-8")
    assert XSS not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert html.count('src="data:image/jpeg;base64,') == 5  # 4 reject entries (one in two groups) + no_face
    assert "http://" not in html.split("</head>")[1] and "<script" not in html
    for reason in ("mirroring", "no_headroom", "closed_eyes", "no_face"):
        assert f">{reason} <small>" in html
