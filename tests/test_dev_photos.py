"""Checks on the research-only photos in ../shared/eval/dev (skipped cleanly when that folder is absent)."""

from __future__ import annotations

from facecurate.catalog import Catalog
from facecurate.faces.crop import CropOptions, run_crop
from facecurate.ingest import import_paths
from facecurate.workspace import Workspace

from .conftest import needs_dev


def test_faces_found_on_ordinary_photos(ws: Workspace, catalog: Catalog, capsys):
    folder = needs_dev("ordinary_faces")
    imported = import_paths(ws, catalog, [folder])
    summary = run_crop(ws, catalog, CropOptions.from_config(ws, size=128, device="cpu"))
    share = summary.with_face / summary.images
    with capsys.disabled():
        print(f"\n[dev] ordinary_faces: face found in {summary.with_face}/{summary.images} = {share:.1%}")
    assert imported.new == summary.images > 100
    assert share >= 0.97


def test_eye_lines_level_on_full_photos(ws: Workspace, catalog: Catalog):
    import json

    folder = needs_dev("eyes_closed_vs_open_fullres_small")
    import_paths(ws, catalog, [folder])
    run_crop(ws, catalog, CropOptions.from_config(ws, size=256, device="cpu"))
    angles = [r[0] for r in catalog.conn.execute("SELECT eye_angle FROM faces")]
    quads = [json.loads(r[0]) for r in catalog.conn.execute("SELECT quad FROM faces")]
    assert len(angles) >= 6 and all(len(q) == 4 for q in quads)
    assert max(abs(a) for a in angles) < 1.0  # alignment de-rotates whatever the head roll


def test_eye_rules_on_labelled_dev_photos(tmp_path):
    """A slice of the dev sets through `evaluate`: the eye rules must separate what the labels say."""
    from facecurate.rules.evaluate import evaluate_dir

    closed = sorted(needs_dev("eyes_closed_vs_open/closed").iterdir())[:60]
    opened = sorted(needs_dev("eyes_closed_vs_open/open").iterdir())[:60]
    covered = sorted(needs_dev("eyes_occluded/sunglasses").iterdir())
    tree = tmp_path / "tree"
    for label, files in (("closed_eyes", closed), ("keep", opened), ("occluded_eyes", covered)):
        (tree / label).mkdir(parents=True)
        for f in files:
            (tree / label / f.name).symlink_to(f)
    result = evaluate_dir(tree, tmp_path / "ws", device="cpu")
    rules = {r["rule"]: r for r in result["rules"]}
    assert rules["closed_eyes"]["precision"] >= 0.95 and rules["closed_eyes"]["recall"] >= 0.8
    assert rules["occluded_eyes"]["recall"] >= 0.6
    assert result["keep_rejected_by_eye_rules"] <= 0.1
