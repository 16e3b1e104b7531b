"""export: the manifest has every row and every field; imagefolder loads in Hugging Face datasets."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from facecurate.catalog import Catalog, Decision, State
from facecurate.catalog.review import LogEntry
from facecurate.export import FIELDS, export
from facecurate.faces.crop import CropOptions, run_crop
from facecurate.ingest import import_paths
from facecurate.rules.stage import run_filter
from facecurate.workspace import Workspace


@pytest.fixture
def exported_ws(ws: Workspace, catalog: Catalog, demo_dir: Path, odd_images: dict[str, Path]):
    import_paths(ws, catalog, [demo_dir], label="demo")
    import_paths(ws, catalog, [odd_images["page.jpg"], odd_images["zero.jpg"]], label="web")
    run_crop(ws, catalog, CropOptions.from_config(ws, size=128, device="cpu"))
    return ws, catalog


def _decide_without_rejecting(ws: Workspace, catalog: Catalog) -> None:
    """Run filter with only a rule these colour portraits never trip: the layout tests are about splits and
    folders, and which faces the rules reject at tiny crop sizes is tests/test_rules.py's business."""
    text = ws.config_path.read_text(encoding="utf-8")
    ws.config_path.write_text(re.sub(r'(?m)^enabled = .*$', 'enabled = "grayscale"', text), encoding="utf-8")
    run_filter(ws, catalog)


def _by_status(manifest: Path) -> dict[str, list]:
    by_status: dict[str, list] = {}
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        assert tuple(row) == FIELDS
        by_status.setdefault(row["status"], []).append(row)
    return by_status


def test_faces_the_rules_have_not_seen_are_pending_and_stay_out_of_layouts(exported_ws, tmp_path: Path):
    ws, catalog = exported_ws
    result = export(ws, catalog, fmt="jsonl", out_dir=tmp_path / "out", layout="imagefolder")
    by_status = _by_status(result.manifest)
    assert len(by_status["pending"]) == 6 and "keep" not in by_status and result.layout_files == 0
    pending = by_status["pending"][0]
    assert pending["dup_group"] is None and pending["scores"] == {}  # later stages: present and empty


def test_jsonl_manifest_has_every_status_and_field(exported_ws, tmp_path: Path):
    ws, catalog = exported_ws
    run_filter(ws, catalog)
    result = export(ws, catalog, fmt="jsonl", out_dir=tmp_path / "out")
    by_status = _by_status(result.manifest)
    assert len(by_status["keep"]) == 5 and len(by_status["reject"]) == 1
    assert len(by_status["no_face"]) == 1 and len(by_status["failed"]) == 2
    assert "mirroring" in by_status["reject"][0]["reasons"]  # the face at the photo's edge
    assert {r["reasons"][0] for r in by_status["failed"]} == {"not_an_image", "empty"}
    keep = by_status["keep"][0]
    assert (tmp_path / "out" / keep["file_name"]).is_file()  # relative to the manifest
    assert keep["label"] == "demo" and keep["source_path"].endswith(".jpg") and keep["review"]["decision"] == "none"
    assert keep["dup_group"] is None and set(keep["scores"]) >= {"mirroring", "ear_mean"}
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["counts"]["status"] == {"keep": 5, "reject": 1, "no_face": 1, "failed": 2}
    assert sidecar["config"]["crop"]["size"] == 512 and sidecar["version"]


def test_csv_and_parquet_carry_the_same_rows(exported_ws, tmp_path: Path):
    ws, catalog = exported_ws
    run_filter(ws, catalog)
    jsonl = export(ws, catalog, fmt="jsonl", out_dir=tmp_path / "j")
    csv_res = export(ws, catalog, fmt="csv", out_dir=tmp_path / "c")
    pq_res = export(ws, catalog, fmt="parquet", out_dir=tmp_path / "p")
    with csv_res.manifest.open() as fh:
        csv_rows = list(csv.DictReader(fh))
    table = pq.read_table(pq_res.manifest)
    assert len(csv_rows) == table.num_rows == jsonl.rows == 9
    assert tuple(csv_rows[0]) == FIELDS and tuple(table.schema.names) == FIELDS
    kept = [r for r in table.to_pylist() if r["status"] == "keep"]
    assert len(kept[0]["landmarks"]) == 5 and len(kept[0]["bbox"]) == 4


def test_imagefolder_loads_with_hugging_face_datasets(exported_ws, tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    ws, catalog = exported_ws
    run_filter(ws, catalog)
    out = tmp_path / "hf"
    result = export(ws, catalog, fmt="jsonl", out_dir=out, layout="imagefolder")
    assert result.layout_files == 5
    both = datasets.load_dataset("imagefolder", data_dir=str(out))
    assert len(both["train"]) + len(both["validation"]) == 5 and len(both["validation"]) == 2  # min_val_per_label
    ds = both["train"]
    assert ds[0]["image"].size == (128, 128) and ds[0]["label"] == "demo"
    assert set(ds.column_names) >= {"image", "label", "sample_id", "source_sha256", "license", "author"}


# -- per-label layout (StarGAN v2 domain folders) -------------------------------------------------------------


def _set_split(ws: Workspace, seed: int, val_fraction: float = 0.5) -> None:
    """The [export] split settings, written the way a user edits facecurate.toml."""
    text = ws.config_path.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^seed = .*$", f"seed = {seed}", text)
    text = re.sub(r"(?m)^val_fraction = .*$", f"val_fraction = {val_fraction}", text)
    ws.config_path.write_text(text, encoding="utf-8")
    assert ws.config().get("export", "seed") == seed


def _layout_files(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for split in ("train", "val") if (out / split).is_dir()
            for p in (out / split).rglob("*") if p.is_file()}


def _expected_per_label(manifest: Path) -> set[str]:
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    return {f"{r['split']}/{r['label']}/{r['sample_id']}.jpg" for r in rows if r["status"] == "keep"}


@pytest.fixture
def two_label_ws(ws: Workspace, catalog: Catalog, demo_dir: Path):
    import_paths(ws, catalog, [demo_dir / n for n in ("obama.jpg", "obama2.jpg", "obama3.jpg")], label="makeup")
    import_paths(ws, catalog, [demo_dir / n for n in ("biden.jpg", "astronaut.jpg", "rocket_no_face.jpg")],
                 label="no_makeup")
    run_crop(ws, catalog, CropOptions.from_config(ws, size=96, device="cpu"))
    _decide_without_rejecting(ws, catalog)
    return ws, catalog


def test_per_label_layout_has_domain_folders_that_agree_with_the_manifest(two_label_ws, tmp_path: Path):
    ws, catalog = two_label_ws
    out = tmp_path / "stargan"
    sides: set[str] = set()
    for seed in range(6):  # several seeds, so both splits get used and re-exports replace the layout
        _set_split(ws, seed)
        result = export(ws, catalog, fmt="jsonl", out_dir=out, layout="per-label")
        files = _layout_files(out)
        assert files == _expected_per_label(result.manifest)  # manifest split == the folder a crop is in
        assert result.layout_files == len(files) == 5
        assert {f.split("/")[1] for f in files} == {"makeup", "no_makeup"}
        sides |= {f.split("/")[0] for f in files}
        assert not list(out.glob(".part-*"))  # the staging folder is gone
    assert sides == {"train", "val"}
    sidecar = json.loads((out / "manifest.json").read_text())
    assert sidecar["layout"] == "per-label"


def test_a_kept_crop_deleted_from_the_workspace_is_left_out_of_the_layout_with_a_note(two_label_ws, tmp_path: Path):
    ws, catalog = two_label_ws
    out = tmp_path / "out"
    whole = export(ws, catalog, out_dir=out, layout="per-label")
    kept = [json.loads(line) for line in whole.manifest.read_text().splitlines()]
    lost = next(r for r in kept if r["status"] == "keep")
    (out / lost["file_name"]).unlink()
    result = export(ws, catalog, out_dir=out, layout="per-label")
    assert result.layout_files == whole.layout_files - 1
    assert _layout_files(out) == _expected_per_label(result.manifest) - {
        f"{lost['split']}/{lost['label']}/{lost['sample_id']}.jpg"}
    assert any("crop file is missing" in note and "crop --redo" in note for note in result.notes)
    assert json.loads(result.sidecar.read_text())["left_out"]["missing_crop"] == 1


AWKWARD_LABELS = {"obama.jpg": "a/b", "obama2.jpg": "a_b", "obama3.jpg": "..", "biden.jpg": "x" * 300,
                  "astronaut.jpg": "日本" * 60}


def test_awkward_labels_get_one_folder_each_inside_the_export(ws: Workspace, catalog: Catalog, demo_dir: Path,
                                                              tmp_path: Path):
    # Imported labels are free text: a slash, "..", a name past the filesystem's 255 bytes, two labels that
    # sanitise alike. Each must still be one domain folder of its own, under --out.
    for name, label in AWKWARD_LABELS.items():
        import_paths(ws, catalog, [demo_dir / name], label=label)
    run_crop(ws, catalog, CropOptions.from_config(ws, size=96, device="cpu"))
    _decide_without_rejecting(ws, catalog)
    out = tmp_path / "stargan"
    result = export(ws, catalog, fmt="jsonl", out_dir=out, layout="per-label")
    rows = [json.loads(line) for line in result.manifest.read_text().splitlines()]
    kept = {r["sample_id"]: r["label"] for r in rows if r["status"] == "keep"}
    assert set(kept.values()) == set(AWKWARD_LABELS.values())
    folders: dict[str, set[str]] = {}
    for f in _layout_files(out):
        _, folder, file = f.split("/")
        assert (out / f).resolve().is_relative_to(out.resolve())
        folders.setdefault(folder, set()).add(kept[file.removesuffix(".jpg")])
    assert len(folders) == len(AWKWARD_LABELS) and all(len(labels) == 1 for labels in folders.values()), folders
    assert all(len(folder.encode()) < 255 and folder not in (".", "..") for folder in folders)


def test_re_export_replaces_the_layout_and_clears_a_killed_one(two_label_ws, tmp_path: Path):
    ws, catalog = two_label_ws
    out = tmp_path / "out"
    export(ws, catalog, out_dir=out, layout="imagefolder")
    assert (out / "train" / "metadata.parquet").is_file()
    stale = out / ".part-999999999-layout" / "train" / "makeup"  # a dead pid's half-built layout
    stale.mkdir(parents=True)
    (stale / "half.jpg").write_bytes(b"\xff\xd8")
    result = export(ws, catalog, out_dir=out, layout="per-label")
    assert _layout_files(out) == _expected_per_label(result.manifest)  # no imagefolder file left behind
    assert not (out / "train" / "metadata.parquet").exists()
    assert not list(out.glob(".part-*"))


def test_per_label_split_never_puts_copies_of_one_photo_on_both_sides(ws: Workspace, catalog: Catalog,
                                                                     demo_dir: Path, tmp_path: Path):
    from PIL import Image, ImageOps

    from facecurate.dedup import DedupOptions, run_dedup

    copies = tmp_path / "copies"
    copies.mkdir()
    with Image.open(demo_dir / "obama.jpg") as im:
        ImageOps.mirror(im).save(copies / "obama_mirrored.jpg", quality=70)  # mirrored and recompressed
        ImageOps.expand(im, border=im.width // 3, fill="white").save(copies / "obama_border.jpg", quality=85)
    import_paths(ws, catalog, [demo_dir / n for n in ("obama.jpg", "biden.jpg", "astronaut.jpg", "obama2.jpg")],
                 label="web")
    import_paths(ws, catalog, [copies], label="web")
    run_crop(ws, catalog, CropOptions.from_config(ws, size=96, device="cpu"))
    run_dedup(ws, catalog, DedupOptions.from_config(ws))
    _decide_without_rejecting(ws, catalog)
    ids = {Path(r["location"]).name: r["image_id"]
           for r in catalog.conn.execute("SELECT location, image_id FROM sources")}
    family = [ids[n] for n in ("obama.jpg", "obama_mirrored.jpg", "obama_border.jpg")]
    marked = catalog.conn.execute("SELECT COUNT(*) FROM item_state WHERE state='duplicate' AND face_id IS NOT NULL "
                                  "AND image_id IN (?,?,?)", family).fetchone()[0]
    assert marked == 2  # dedup found both copies (one a photo duplicate, one at least a face duplicate)
    # A person keeps the copies anyway (e.g. as augmentations): now all three reach the layout.
    with catalog.transaction():
        catalog.review_append(catalog.review_next_batch(), "keep",
                              [LogEntry(i, 0, Decision.NONE, Decision.KEPT, State.DUPLICATE) for i in family],
                              "tester", "s1")
    sha = {i: catalog.conn.execute("SELECT sha256 FROM images WHERE id=?", (i,)).fetchone()[0][:16] for i in family}
    out = tmp_path / "out"
    family_sides, other_sides = set(), set()
    for seed in range(24):
        _set_split(ws, seed)
        result = export(ws, catalog, out_dir=out, layout="per-label")
        files = _layout_files(out)
        assert files == _expected_per_label(result.manifest)
        sides = {f.split("/")[0] for f in files if f.split("/")[-1].split("_")[0] in sha.values()}
        assert len([f for f in files if f.split("/")[-1].split("_")[0] in sha.values()]) == 3
        assert len(sides) == 1, f"seed {seed}: copies of one photo on both sides"
        family_sides |= sides
        other_sides |= {f.split("/")[0] for f in files}
    assert family_sides == {"train", "val"} == other_sides  # the split really moves with the seed


def test_faces_of_a_duplicate_photo_stay_out_when_dedup_ran_before_crop(ws: Workspace, catalog: Catalog,
                                                                        demo_dir: Path, tmp_path: Path):
    """DESIGN's order (dedup, then crop) leaves the copies' new faces unseen by dedup's face pass: they must
    still be duplicates and stay out of the layout, or a step-by-step user exports the same face twice."""
    from PIL import Image, ImageOps

    from facecurate.dedup import DedupOptions, run_dedup

    copies = tmp_path / "copies"
    copies.mkdir()
    with Image.open(demo_dir / "obama.jpg") as im:
        ImageOps.mirror(im).save(copies / "obama_mirrored.jpg", quality=70)
    import_paths(ws, catalog, [demo_dir / "obama.jpg", demo_dir / "biden.jpg", copies], label="web")
    run_dedup(ws, catalog, DedupOptions.from_config(ws))          # photos only: no crops yet
    run_crop(ws, catalog, CropOptions.from_config(ws, size=96, device="cpu"))
    _decide_without_rejecting(ws, catalog)
    marked = catalog.conn.execute("SELECT s.state FROM item_state s JOIN images i ON i.id=s.image_id "
                                  "WHERE i.dup_of IS NOT NULL").fetchall()
    assert [r[0] for r in marked] == ["duplicate"]  # status, review and filter see it as the copy it is
    result = export(ws, catalog, out_dir=tmp_path / "out", layout="imagefolder")
    rows = {}
    for line in result.manifest.read_text().splitlines():
        row = json.loads(line)
        rows[Path(row["source_path"]).name] = row
    copy, original = rows["obama_mirrored.jpg"], rows["obama.jpg"]
    assert copy["status"] == "duplicate" and copy["dup_of"] == original["sample_id"]
    assert original["status"] == "keep" and rows["biden.jpg"]["status"] == "keep"
    assert result.layout_files == 2  # obama and biden; the mirrored copy stays out


def test_export_writes_only_into_a_folder_it_owns_with_ordinary_files(two_label_ws, tmp_path: Path):
    import os
    import stat

    from facecurate.errors import ExportError

    ws, catalog = two_label_ws
    users = tmp_path / "my_dataset"
    (users / "train").mkdir(parents=True)
    (users / "train" / "mine.jpg").write_bytes(b"the user's own file")
    (users / "manifest.jsonl").write_text("the user's own manifest\n")
    with pytest.raises(ExportError, match="did not write"):
        export(ws, catalog, out_dir=users, layout="per-label")
    assert (users / "train" / "mine.jpg").read_bytes() == b"the user's own file"  # nothing touched
    assert (users / "manifest.jsonl").read_text() == "the user's own manifest\n"

    out = tmp_path / "fresh"
    old = os.umask(0o022)
    try:
        result = export(ws, catalog, out_dir=out, layout="per-label")
        again = export(ws, catalog, out_dir=out, layout="imagefolder")  # its own folder: replaced, no refusal
    finally:
        os.umask(old)
    assert again.layout_files == result.layout_files > 0
    crop = next((out / "train").glob("*.jpg"))
    for path in (again.manifest, again.sidecar, crop):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path  # readable by a training job's user
    assert crop.stat().st_nlink == 1  # a copy: editing the export cannot edit the workspace's crop


@pytest.mark.parametrize("out", ["a_file", "a_file/below", "x" * 300])
def test_an_out_folder_that_cannot_be_made_is_a_message_naming_it(ws: Workspace, tmp_path: Path, out: str):
    from facecurate.errors import ExportError
    from facecurate.export import claim

    (tmp_path / "a_file").write_text("the user's file\n")
    with pytest.raises(ExportError, match=r"Cannot export into .*--out"):
        claim(tmp_path / out, ws)
    assert (tmp_path / "a_file").read_text() == "the user's file\n"
