"""export: the manifest has every row and every field; imagefolder loads in Hugging Face datasets."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from facecurate.catalog import Catalog
from facecurate.export import FIELDS, export
from facecurate.faces.crop import CropOptions, run_crop
from facecurate.ingest import import_paths
from facecurate.workspace import Workspace


@pytest.fixture
def exported_ws(ws: Workspace, catalog: Catalog, demo_dir: Path, odd_images: dict[str, Path]):
    import_paths(ws, catalog, [demo_dir], label="demo")
    import_paths(ws, catalog, [odd_images["page.jpg"], odd_images["zero.jpg"]], label="web")
    run_crop(ws, catalog, CropOptions.from_config(ws, size=128, device="cpu"))
    return ws, catalog


def test_jsonl_manifest_has_every_status_and_field(exported_ws, tmp_path: Path):
    ws, catalog = exported_ws
    result = export(ws, catalog, fmt="jsonl", out_dir=tmp_path / "out")
    rows = [json.loads(line) for line in result.manifest.read_text().splitlines()]
    assert all(tuple(r) == FIELDS for r in rows)
    by_status: dict[str, list] = {}
    for r in rows:
        by_status.setdefault(r["status"], []).append(r)
    assert len(by_status["keep"]) == 6 and len(by_status["no_face"]) == 1 and len(by_status["failed"]) == 2
    assert {r["reasons"][0] for r in by_status["failed"]} == {"not_an_image", "empty"}
    keep = by_status["keep"][0]
    assert (tmp_path / "out" / keep["file_name"]).is_file()  # relative to the manifest
    assert keep["label"] == "demo" and keep["source_path"].endswith(".jpg") and keep["review"]["decision"] == "none"
    assert keep["dup_group"] is None and keep["scores"] == {}  # later stages: present and empty
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["counts"]["status"] == {"keep": 6, "no_face": 1, "failed": 2}
    assert sidecar["config"]["crop"]["size"] == 512 and sidecar["version"]


def test_csv_and_parquet_carry_the_same_rows(exported_ws, tmp_path: Path):
    ws, catalog = exported_ws
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
    out = tmp_path / "hf"
    result = export(ws, catalog, fmt="jsonl", out_dir=out, layout="imagefolder")
    assert result.layout_files == 6
    ds = datasets.load_dataset("imagefolder", data_dir=str(out), split="train")
    assert len(ds) == 6
    assert ds[0]["image"].size == (128, 128) and ds[0]["label"] == "demo"
    assert set(ds.column_names) >= {"image", "label", "sample_id", "source_sha256"}
