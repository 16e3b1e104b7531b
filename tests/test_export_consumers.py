"""Exports that load where they are used: StarGAN v2 and CycleGAN folder trees (their loaders' conditions,
transcribed), Hugging Face ``datasets`` (imagefolder with its card, the Parquet manifest), pandas dtypes, licence
filtering, and export folders that do not collide."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from facecurate.catalog import Catalog
from facecurate.errors import ConfigError, ExportError
from facecurate.export import export
from facecurate.export.licenses import license_family
from facecurate.faces.crop import CropOptions, run_crop
from facecurate.ingest import import_paths
from facecurate.pipeline import RunOptions, run_pipeline
from facecurate.rules.stage import run_filter
from facecurate.workspace import Workspace, init_workspace


def _only_grayscale_rule(ws: Workspace, catalog: Catalog) -> None:
    """Filter with a rule these colour portraits never trip: these tests are about folders and splits."""
    text = ws.config_path.read_text(encoding="utf-8")
    ws.config_path.write_text(re.sub(r'(?m)^enabled = .*$', 'enabled = "grayscale"', text), encoding="utf-8")
    run_filter(ws, catalog)


def _photos(demo_dir: Path, out: Path, plan: dict[str, list[tuple[str, bool]]]) -> dict[str, list[Path]]:
    """Per label, the bundled photos named, mirrored where asked (a different photo to a workspace that has not
    run dedup): enough distinct faces per label for a real split."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[Path]] = {}
    for label, names in plan.items():
        for name, mirror in names:
            path = demo_dir / name
            if mirror:
                path = out / f"{label}_{name}"
                with Image.open(demo_dir / name) as im:
                    ImageOps.mirror(im).save(path, quality=90)
            files.setdefault(label, []).append(path)
    return files


def _workspace(root: Path, demo_dir: Path, plan: dict[str, list[tuple[str, bool]]]) -> tuple[Workspace, Catalog]:
    ws = init_workspace(root / "ws")
    catalog = Catalog.open(ws.catalog_path)
    for label, paths in _photos(demo_dir, root / "photos", plan).items():
        import_paths(ws, catalog, paths, label=label)
    run_crop(ws, catalog, CropOptions.from_config(ws, size=96, device="cpu"))
    _only_grayscale_rule(ws, catalog)
    return ws, catalog


THREE_LABELS = {"makeup": [("obama.jpg", False), ("obama2.jpg", False), ("obama.jpg", True)],
                "no_makeup": [("biden.jpg", False), ("obama3.jpg", False), ("biden.jpg", True)],
                "glasses": [("obama2.jpg", True), ("obama3.jpg", True), ("astronaut.jpg", False)]}


@pytest.fixture(scope="module")
def three_labels(tmp_path_factory):
    from facecurate.demo import DEMO_DATA

    ws, catalog = _workspace(tmp_path_factory.mktemp("three"), DEMO_DATA, THREE_LABELS)
    yield ws, catalog
    catalog.close()


def _tree(root: Path) -> list[str]:
    """The folder tree below root, folders with their file counts (printed in the closing note)."""
    return sorted(f"{p.relative_to(root)}/ ({sum(1 for f in p.iterdir() if f.is_file())} files)"
                  for p in root.rglob("*") if p.is_dir())


# -- StarGAN v2 (clovaai/stargan-v2 main.py and core/data_loader.py, transcribed) ---------------------------------

STARGAN_EXTS = ("png", "jpg", "jpeg", "JPG")


def _stargan_subdirs(dname: Path) -> list[str]:
    return [d for d in os.listdir(dname) if os.path.isdir(os.path.join(dname, d))]


def _stargan_listdir(dname: Path) -> list[Path]:
    return [p for ext in STARGAN_EXTS for p in Path(dname).rglob("*." + ext)]


def _check_stargan(root: Path, labels: set[str]) -> None:
    train, val = root / "train", root / "val"
    # main.py: assert len(subdirs(args.train_img_dir)) == args.num_domains (and the same for val)
    assert len(_stargan_subdirs(train)) == len(labels) == len(_stargan_subdirs(val))
    assert set(_stargan_subdirs(train)) == set(_stargan_subdirs(val)) == labels
    # ReferenceDataset: every entry of train/ is a domain folder (os.listdir, not subdirs), each with images
    for split in (train, val):
        assert sorted(os.listdir(split)) == sorted(labels), f"{split} holds something besides the domains"
        for domain in sorted(os.listdir(split)):
            assert _stargan_listdir(split / domain), f"{split / domain} has no image"
    # get_train_loader / get_eval_loader: torchvision ImageFolder, every image readable
    torchvision = pytest.importorskip("torchvision")
    for split in (train, val):
        folder = torchvision.datasets.ImageFolder(str(split))
        assert folder.classes == sorted(labels)
        assert {folder.classes[t] for _, t in folder.samples} == labels
        for path, _ in folder.samples:
            assert folder.loader(path).size[0] > 0


def test_per_label_meets_stargan_v2_on_three_labels_with_the_default_settings(three_labels, capsys):
    ws, catalog = three_labels
    result = export(ws, catalog, layout="per-label")  # no setting edited: val_fraction and the minimum defaults
    out = ws.exports_dir / "per-label"
    assert result.layout_dir == out and result.manifest.parent == out
    _check_stargan(out, set(THREE_LABELS))
    # stratified, with the minimum: each label has 3 faces, so 2 in val and 1 in train (one always stays)
    assert result.splits == {label: {"train": 1, "val": 2} for label in THREE_LABELS}
    rows = [json.loads(line) for line in result.manifest.read_text().splitlines()]
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*.jpg")}
    assert on_disk == {f"{r['split']}/{r['label']}/{r['sample_id']}.jpg" for r in rows if r["status"] == "keep"}
    with capsys.disabled():
        print("\nStarGAN v2, 3 labels:", *_tree(out), sep="\n  ")


def test_split_is_stratified_per_label_whatever_the_seed(three_labels, tmp_path: Path):
    ws, catalog = three_labels
    for seed in range(8):
        text = re.sub(r"(?m)^seed = .*$", f"seed = {seed}", ws.config_path.read_text(encoding="utf-8"))
        ws.config_path.write_text(text, encoding="utf-8")
        result = export(ws, catalog, layout="per-label", out_dir=tmp_path / "stargan")
        assert all(n["val"] == 2 and n["train"] == 1 for n in result.splits.values()), (seed, result.splits)
    text = re.sub(r"(?m)^min_val_per_label = .*$", "min_val_per_label = 0", ws.config_path.read_text())
    ws.config_path.write_text(re.sub(r"(?m)^val_fraction = .*$", "val_fraction = 0.0", text), encoding="utf-8")
    try:  # the user asked for no validation at all: then there is none, and a note says what StarGAN v2 needs
        result = export(ws, catalog, layout="per-label", out_dir=tmp_path / "no_val")
        assert not (tmp_path / "no_val" / "val").exists() and len(result.notes) == 3
    finally:
        text = re.sub(r"(?m)^min_val_per_label = .*$", "min_val_per_label = 2", ws.config_path.read_text())
        ws.config_path.write_text(re.sub(r"(?m)^val_fraction = .*$", "val_fraction = 0.1", text), encoding="utf-8")


def test_cyclegan_refuses_three_labels_before_writing_anything(three_labels, tmp_path: Path):
    ws, catalog = three_labels
    with pytest.raises(ExportError, match=r"exactly two labels.*carries 3 .*: glasses, makeup, no_makeup"):
        export(ws, catalog, layout="cyclegan", out_dir=tmp_path / "cg")
    assert not (tmp_path / "cg").exists()


# -- CycleGAN (junyanz/pytorch-CycleGAN-and-pix2pix data/unaligned_dataset.py, image_folder.py, transcribed) --------

CYCLEGAN_EXTS = (".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".ppm", ".PPM", ".bmp", ".BMP", ".tif", ".TIF",
                 ".tiff", ".TIFF")


def _cyclegan_make_dataset(folder: str) -> list[str]:
    assert os.path.isdir(folder), f"{folder} is not a valid directory"
    return [os.path.join(root, f) for root, _, names in sorted(os.walk(folder)) for f in names
            if f.endswith(CYCLEGAN_EXTS)]


def _check_cyclegan(dataroot: Path) -> None:
    for phase in ("train", "test"):
        a_paths = sorted(_cyclegan_make_dataset(os.path.join(dataroot, phase + "A")))
        b_paths = sorted(_cyclegan_make_dataset(os.path.join(dataroot, phase + "B")))
        assert len(a_paths) and len(b_paths), f"{phase}: index % A_size needs images on both sides"
        for path in a_paths + b_paths:  # __getitem__: Image.open(path).convert('RGB')
            with Image.open(path) as im:
                assert im.convert("RGB").size[0] > 0


def test_cyclegan_layout_on_two_labels(ws: Workspace, catalog: Catalog, demo_dir: Path, tmp_path: Path, capsys):
    plan = {"makeup": THREE_LABELS["makeup"], "no_makeup": THREE_LABELS["no_makeup"]}
    for label, paths in _photos(demo_dir, tmp_path / "photos", plan).items():
        import_paths(ws, catalog, paths, label=label)
    run_crop(ws, catalog, CropOptions.from_config(ws, size=96, device="cpu"))
    _only_grayscale_rule(ws, catalog)
    result = export(ws, catalog, layout="cyclegan")
    out = ws.exports_dir / "cyclegan"
    assert result.layout_dir == out
    _check_cyclegan(out)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["testA", "testB", "trainA", "trainB"]
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["domains"] == {"A": "makeup", "B": "no_makeup"}
    assert len(list((out / "testA").glob("*.jpg"))) == 2 and len(list((out / "trainA").glob("*.jpg"))) == 1
    with capsys.disabled():
        print("\nCycleGAN, 2 labels:", *_tree(out), sep="\n  ")


# -- Hugging Face, licences and the card, on crawled (the demo) + imported photos -----------------------------

WIKIMEDIA_LICENCES = {"obama.jpg": "CC BY-SA 4.0", "obama3.jpg": "Public domain", "biden.jpg": "CC BY-NC 2.0",
                      "obama2.jpg": "CC0"}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """The demo workspace (crawled from the loopback engine), its sources given the licence strings Wikimedia
    stores, plus two generated-label photos imported from a folder and taken through crop and filter."""
    from facecurate.demo import DEMO_DATA, run_demo

    root = tmp_path_factory.mktemp("mixed")
    result = run_demo(root / "ws", "cpu")
    assert result.run.ok
    ws = Workspace(result.workspace)
    catalog = Catalog.open(ws.catalog_path)
    with catalog.transaction():  # as the wikimedia engine records them (tests/test_crawl_engines.py)
        for name, licence in WIKIMEDIA_LICENCES.items():
            catalog.conn.execute("UPDATE sources SET license=?, author=? WHERE location LIKE ?",
                                 (licence, f"Photographer of {name}", f"%/{name}"))
    photos = _photos(DEMO_DATA, root / "generated", {"generated": [("obama2.jpg", True), ("obama3.jpg", True),
                                                                   ("biden.jpg", True)]})
    import_paths(ws, catalog, photos["generated"], label="generated")
    summary = run_pipeline(ws, catalog, RunOptions(stages=("crop", "filter"), device="cpu"))
    assert summary.ok
    yield ws, catalog
    catalog.close()


def test_imagefolder_loads_with_datasets_and_its_card(mixed, capsys):
    datasets = pytest.importorskip("datasets")
    yaml = pytest.importorskip("yaml")
    ws, catalog = mixed
    result = export(ws, catalog)  # the default layout, into its own folder
    out = ws.exports_dir / "imagefolder"
    assert result.layout == "imagefolder" and result.layout_dir == out and result.card == out / "README.md"
    ds = datasets.load_dataset(str(out))  # the card's configs: splits and features
    assert set(ds) == {"train", "validation"}
    assert len(ds["train"]) + len(ds["validation"]) == result.layout_files == result.counts["keep"]
    label = ds["train"].features["label"]
    assert isinstance(label, datasets.ClassLabel) and label.names == ["generated", "official", "press"]
    for split in ("train", "validation"):  # every label on both sides
        assert {label.int2str(i) for i in ds[split]["label"]} == set(label.names)
    rows = ds["train"].to_list() + ds["validation"].to_list()
    crawled = [r for r in rows if r["source_url"]]
    imported = [r for r in rows if r["source_path"]]
    assert crawled and imported and len(crawled) + len(imported) == len(rows)
    assert {r["license"] for r in crawled} == set(WIKIMEDIA_LICENCES.values())
    assert all(r["author"].startswith("Photographer of ") and r["page_url"] for r in crawled)
    assert {r["license_family"] for r in imported} == {"unknown"} and all(r["retrieved_at"] for r in crawled)
    assert all(isinstance(r["scores"]["sharpness"], float) and r["reasons"] == [] for r in rows)
    # without the card, the plain imagefolder builder takes the same metadata.parquet files
    plain = datasets.load_dataset("imagefolder", data_dir=str(out))
    assert plain["validation"].num_rows == ds["validation"].num_rows
    text = result.card.read_text()
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["task_categories"] == ["image-classification"] and header["size_categories"] == ["n<1K"]
    assert set(header["license"]) == {"cc-by-sa-4.0", "other", "cc-by-nc-2.0", "cc0-1.0", "unknown"}
    assert header["configs"][0]["data_files"] == [{"split": "train", "path": "train/**"},
                                                  {"split": "validation", "path": "val/**"}]
    assert "| generated | import | local files |" in text and "| official | bing | official portrait |" in text
    assert "| small_face |" in text and '"contact"' not in text
    with capsys.disabled():
        print("\nimagefolder:", {s: (d.num_rows, list(d.features)) for s, d in ds.items()},
              f"label={label}", sep="\n  ")


def test_license_filter_leaves_faces_out_and_the_card_says_why(mixed, tmp_path: Path):
    yaml = pytest.importorskip("yaml")
    ws, catalog = mixed
    result = export(ws, catalog, layout="per-label", licenses="cc0,pd,cc-by,cc-by-sa", out_dir=tmp_path / "free")
    rows = [json.loads(line) for line in result.manifest.read_text().splitlines()]
    kept = [r for r in rows if r["status"] == "keep"]
    allowed = [r for r in kept if license_family(r["license"]) in ("cc0", "pd", "cc-by", "cc-by-sa")]
    on_disk = {p.stem for p in (tmp_path / "free").rglob("*.jpg")}
    assert on_disk == {r["sample_id"] for r in allowed} and len(rows) == result.rows  # the manifest keeps all
    assert result.left_out == {"cc-by-nc": 1, "unknown": len(kept) - len(allowed) - 1}
    text = result.card.read_text()
    assert "Licence filter: only cc0, pd, cc-by, cc-by-sa" in text and "cc-by-nc 1" in text
    assert yaml.safe_load(text.split("---\n")[1])["license"] == ["cc-by-sa-4.0", "cc0-1.0", "other"]
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["left_out"]["license"] == result.left_out
    with pytest.raises(ConfigError, match="cc-by-nc-nd"):  # a family the table does not list
        export(ws, catalog, licenses="cc-by-ncnd", out_dir=tmp_path / "typo")


def test_parquet_manifest_has_typed_columns_in_pandas_and_datasets(mixed, tmp_path: Path, capsys):
    pd = pytest.importorskip("pandas")
    datasets = pytest.importorskip("datasets")
    ws, catalog = mixed
    result = export(ws, catalog, fmt="parquet", layout="none", out_dir=tmp_path / "m")
    frame = pd.read_parquet(result.manifest)
    for column in ("dup_group", "face_index", "crop_size", "rank", "source_width"):
        assert str(frame[column].dtype) == "Int64", column
    assert frame["dup_group"].isna().any() and frame["dup_group"].notna().any()  # missing stays missing
    assert str(frame["retrieved_at"].dtype) == "datetime64[us, UTC]"
    keep = frame[frame["status"] == "keep"].iloc[0]
    assert isinstance(keep["scores"], dict) and isinstance(keep["scores"]["sharpness"], float)
    assert keep["review"]["decision"] == "none" and keep["review"]["at"] is None
    ds = datasets.load_dataset("parquet", data_files=str(result.manifest), split="train")
    assert ds.features["face_index"] == datasets.Value("int64")
    assert ds.features["retrieved_at"] == datasets.Value("timestamp[us, tz=UTC]")
    assert ds.features["review"]["decision"] == datasets.Value("string") and "sharpness" in ds.features["scores"]
    assert len(ds) == result.rows
    with capsys.disabled():
        print("\nparquet manifest:", f"{len(ds)} rows", frame.dtypes.to_string(), ds.features, sep="\n  ")


def test_layouts_have_their_own_folders_and_formats_replace_each_other(mixed):
    ws, catalog = mixed
    export(ws, catalog, layout="per-label", fmt="jsonl")
    export(ws, catalog, layout="imagefolder", fmt="jsonl")
    export(ws, catalog, layout="imagefolder", fmt="parquet")  # a new format replaces the old one as a set
    export(ws, catalog, layout="none", fmt="csv")
    exports = ws.exports_dir
    assert (exports / "per-label" / "manifest.jsonl").is_file() and (exports / "per-label" / "val").is_dir()
    assert sorted(p.name for p in (exports / "imagefolder").glob("manifest.*")) == ["manifest.json",
                                                                                     "manifest.parquet"]
    assert (exports / "imagefolder" / "train" / "metadata.parquet").is_file()  # per-label did not replace it
    assert (exports / "manifest.csv").is_file() and not (exports / "train").exists()
    assert not list(exports.glob("*/manifest.csv"))  # the bare manifest went to exports/ only
    assert json.loads((exports / "per-label" / "manifest.json").read_text())["layout"] == "per-label"


def test_run_and_export_share_one_default_and_the_retired_run_layout(tmp_path: Path):
    from facecurate.export import ExportOptions
    from facecurate.workspace import setting

    ws = init_workspace(tmp_path / "ws")
    text = ws.config_path.read_text()
    run_section = text.split("\n[run]\n", 1)[1].split("\n[", 1)[0]  # [run] now holds the executor settings
    assert "layout" not in run_section
    assert ExportOptions.from_config(ws).layout == setting("export", "layout").default == "imagefolder"
    # what `init` wrote before run and export shared [export] layout
    ws.config_path.write_text(text.replace("\n[run]\n", '\n[run]\nlayout = "imagefolder"\n', 1))
    assert ws.config().get("export", "layout") == "imagefolder"
    ws.config_path.write_text(ws.config_path.read_text().replace('[run]\nlayout = "imagefolder"',
                                                                 '[run]\nlayout = "per-label"'))
    with pytest.raises(ConfigError, match=r"\[run\] layout = 'per-label' is retired.*\[export\] layout"):
        ws.config()


@pytest.mark.parametrize(("text", "family"), [
    ("CC BY-SA 4.0", "cc-by-sa"), ("CC BY-SA 3.0 de", "cc-by-sa"), ("Public domain", "pd"), ("PD-US", "pd"),
    ("CC0", "cc0"), ("https://creativecommons.org/publicdomain/zero/1.0/", "cc0"), ("CC BY 2.0", "cc-by"),
    ("Creative Commons Attribution-Share Alike 4.0", "cc-by-sa"), ("CC BY-NC-ND 4.0", "cc-by-nc-nd"),
    ("https://creativecommons.org/licenses/by-nc-sa/2.0/", "cc-by-nc-sa"), ("GFDL", "gfdl"),
    ("GFDL, CC BY-SA 3.0", "cc-by-sa"), ("Attribution", "other"), ("All rights reserved", "other"),
    (None, "unknown"), ("  ", "unknown")])
def test_licence_strings_fall_in_their_family(text, family):
    assert license_family(text) == family
