"""Dataset layouts: the kept crops arranged the way their consumers load them.

- ``imagefolder`` (Hugging Face): ``train/`` and ``val/``, each with the crops and a ``metadata.parquet`` of one
  explicit schema (a column empty in one split keeps its type, so ``datasets`` accepts the splits together).
- ``per-label`` (StarGAN v2, torchvision ImageFolder): ``train/LABEL/`` and ``val/LABEL/``, nothing else in
  ``train/`` or ``val/`` (StarGAN v2 lists them and counts every entry as a domain).
- ``cyclegan``: ``trainA/ trainB/ testA/ testB/`` for exactly two labels, A the first in sorted order.

Layouts are built in a staging folder and swapped in by rename, so a killed export leaves no half layout, and a
re-export replaces it whole: every layout folder this module writes is removed when the new export has none of
that name, so a per-label export leaves no imagefolder ``train/metadata.parquet`` behind, nor a cyclegan one.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facecurate import media
from facecurate.errors import ExportError
from facecurate.export.licenses import license_family
from facecurate.export.manifest import Row, score_names, timestamp

LAYOUTS = ("none", "imagefolder", "per-label", "cyclegan")
SPLITS = ("train", "val")
CYCLEGAN_DIRS = {("train", "A"): "trainA", ("train", "B"): "trainB", ("val", "A"): "testA", ("val", "B"): "testB"}
# Every folder a layout writes at the export's top level: an export replaces them all as one set.
LAYOUT_DIRS = (*SPLITS, *CYCLEGAN_DIRS.values())
UNLABELLED = "unlabelled"  # folder of kept faces whose photo has no label (per-label layout)
# imagefolder metadata after file_name: attribution first (what a publisher must carry), then the decision.
IMAGEFOLDER_META = ("label", "sample_id", "license", "license_family", "author", "page_url", "source_url",
                    "source_path", "title", "engine", "query", "retrieved_at", "source_sha256", "det_score",
                    "oob_fraction", "above_fraction", "crop_size", "reasons", "scores")
IMAGEFOLDER_META_FILE = "metadata.parquet"


def _split(rows: list[Row], split: str) -> list[Row]:
    """The rows a layout carries (export already chose them) of one split."""
    return [r for r in rows if r["split"] == split]


def imagefolder_labels(rows: list[Row]) -> list[str]:
    """The class names of an imagefolder export: the carried rows' labels, sorted (ClassLabel ids follow)."""
    return sorted({r["label"] or UNLABELLED for r in rows})


def imagefolder_schema(labels: list[str], names: list[str]) -> tuple[Any, list[dict[str, Any]]]:
    """The metadata.parquet schema and the same columns as Hugging Face features (the YAML list a dataset card's
    ``configs`` carries, so ``load_dataset(folder)`` reads ``label`` as a ClassLabel of ``labels``).

    Both are fixed whatever the rows hold: a column that is empty in one split still has its type."""
    import pyarrow as pa

    s, f64, i64, utc = pa.string(), pa.float64(), pa.int64(), pa.timestamp("us", tz="UTC")
    arrow: dict[str, Any] = dict.fromkeys(("file_name", *IMAGEFOLDER_META), s)
    arrow.update(det_score=f64, oob_fraction=f64, above_fraction=f64, crop_size=i64, retrieved_at=utc,
                 reasons=pa.list_(s), scores=pa.struct([(n, f64) for n in names]))
    hf = {pa.string(): "string", f64: "float64", i64: "int64", utc: "timestamp[us, tz=UTC]"}
    features: list[dict[str, Any]] = [{"name": "image", "dtype": "image"}]
    for name, kind in arrow.items():
        if name == "file_name":
            continue
        if name == "label":
            features.append({"name": name, "dtype": {"class_label": {"names": dict(enumerate(labels))}}})
        elif name == "reasons":
            features.append({"name": name, "list": "string"})
        elif name == "scores":
            features.append({"name": name, "struct": [{"name": n, "dtype": "float64"} for n in names]})
        else:
            features.append({"name": name, "dtype": hf[kind]})
    return pa.schema(list(arrow.items())), features


def _write_imagefolder(rows: list[Row], out_dir: Path, stage: Path) -> int:
    """Kept crops under <split>/ with metadata.parquet (``file_name`` relative to it), as HF expects."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = score_names(rows)
    schema, _ = imagefolder_schema(imagefolder_labels(rows), names)
    written = 0
    for split in SPLITS:
        kept = _split(rows, split)
        if not kept:
            continue
        split_dir = stage / split
        split_dir.mkdir(parents=True)
        meta = []
        for r in kept:
            src = (out_dir / r["file_name"]).resolve()
            name = f"{r['sample_id']}{src.suffix}"
            _copy(src, split_dir / name)
            meta.append({"file_name": name, **{k: r.get(k) for k in IMAGEFOLDER_META},
                         "label": r["label"] or UNLABELLED, "license_family": license_family(r["license"]),
                         "retrieved_at": timestamp(r["retrieved_at"]),
                         "scores": {n: r["scores"].get(n) for n in names}})
            written += 1
        pq.write_table(pa.Table.from_pylist(meta, schema=schema), split_dir / IMAGEFOLDER_META_FILE)
    return written


FOLDER_BYTES = 120  # a label folder's name at most, in UTF-8: well inside the 255 bytes filesystems allow


def label_folder(label: str | None) -> str:
    """A label as one folder name: tracked labels already are (letters, digits, - _ .); imported ones may not.

    One folder per label: a label that is not already a short, safe name ("a/b", "..", 300 characters) gets a
    short hash of itself after its sanitised form, so two labels never share a domain folder ("a/b" and "a_b"
    would both be "a_b", ".." would join the unlabelled faces) and no name is too long to create."""
    if not label:
        return UNLABELLED
    name = re.sub(r"[^\w.-]+", "_", label).strip("._")
    if name == label and len(name.encode()) <= FOLDER_BYTES and name != UNLABELLED:
        return name
    short = name.encode()[:FOLDER_BYTES - 9].decode(errors="ignore").rstrip("._") or "label"
    return f"{short}-{hashlib.sha256(label.encode()).hexdigest()[:8]}"


def _write_per_label(rows: list[Row], out_dir: Path, stage: Path) -> int:
    """Kept crops under <split>/<label>/, the domain folders StarGAN v2 (and torchvision ImageFolder) read."""
    written = 0
    for split in SPLITS:
        for r in _split(rows, split):
            written += _place(r, out_dir, stage / split / label_folder(r["label"]))
    return written


def cyclegan_domains(rows: list[Row]) -> dict[str, str]:
    """``{"A": label, "B": label}`` for the two labels the rows hold, or a refusal naming what they hold:
    CycleGAN's unaligned dataset translates between exactly two domains."""
    labels = sorted({label_folder(r["label"]) for r in rows})
    if len(labels) != 2:
        held = ", ".join(labels) if labels else "none"
        raise ExportError(f"The cyclegan layout needs kept faces of exactly two labels (trainA/ and trainB/), "
                          f"and this export carries {len(labels)} (after the licence filter, if any): {held}. "
                          f"Export from a workspace whose kept faces have two labels, or use --layout per-label "
                          f"(any number of labels).")
    return {"A": labels[0], "B": labels[1]}


def _write_cyclegan(rows: list[Row], out_dir: Path, stage: Path) -> int:
    """Kept crops of label A under trainA/ testA/, of label B under trainB/ testB/ (test = the val split)."""
    side = {label: key for key, label in cyclegan_domains(rows).items()}
    written = 0
    for r in rows:
        folder = CYCLEGAN_DIRS[(r["split"], side[label_folder(r["label"])])]
        written += _place(r, out_dir, stage / folder)
    return written


def _place(r: Row, out_dir: Path, folder: Path) -> int:
    src = (out_dir / r["file_name"]).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    _copy(src, folder / f"{r['sample_id']}{src.suffix}")
    return 1


LAYOUT_WRITERS: dict[str, Callable[[list[Row], Path, Path], int]] = {
    "imagefolder": _write_imagefolder, "per-label": _write_per_label,
    "cyclegan": _write_cyclegan}


def publish_layout(layout: str, rows: list[Row], out_dir: Path) -> int:
    """Build the layout (``rows``: the ones it carries) in a staging folder beside it, then swap each of its
    folders in by rename.

    A kill while building leaves only the staging folder (named like media's temp files, so the next export
    removes it); the old layout stays whole until the swap, and a layout folder the new export does not write
    (a split with no kept face, another layout's folders) is removed."""
    media.remove_stale_parts(out_dir)
    stage = out_dir / f"{media.PART_PREFIX}{os.getpid()}-layout"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        written = LAYOUT_WRITERS[layout](rows, out_dir, stage)
        for split in LAYOUT_DIRS:
            target, old = out_dir / split, out_dir / f"{media.PART_PREFIX}{os.getpid()}-old-{split}"
            if target.exists():
                os.replace(target, old)
            if (stage / split).exists():
                os.replace(stage / split, target)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return written


def _copy(src: Path, dst: Path) -> None:
    """A copy, not a hard link: editing an exported crop must not edit the workspace, and the copy gets the
    user's umask permissions (copyfile uses copy_file_range, which reflinks where the filesystem can)."""
    shutil.copyfile(src, dst)
