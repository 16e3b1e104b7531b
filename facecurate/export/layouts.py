"""Dataset layouts: the kept crops arranged the way their consumers load them.

Layouts are built in a staging folder and swapped in by rename, so a killed export leaves no half layout, and a
re-export replaces it whole.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from facecurate import media
from facecurate.catalog import State
from facecurate.export.manifest import Row

LAYOUTS = ("none", "imagefolder", "per-label")
SPLITS = ("train", "val")
UNLABELLED = "unlabelled"  # folder of kept faces whose photo has no label (per-label layout)
IMAGEFOLDER_META = ("label", "sample_id", "source_sha256", "det_score", "oob_fraction", "above_fraction",
                    "crop_size", "source_path", "source_url", "query")


def _kept(rows: list[Row], split: str) -> list[Row]:
    """Rows a layout carries: kept faces with a crop file, of one split."""
    return [r for r in rows if r["status"] == State.KEEP.value and r["split"] == split and r["file_name"]]


def _write_imagefolder(rows: list[Row], out_dir: Path, stage: Path) -> int:
    """Kept crops under <split>/ with metadata.jsonl (``file_name`` relative to it), as HF expects."""
    written = 0
    for split in SPLITS:
        kept = _kept(rows, split)
        if not kept:
            continue
        split_dir = stage / split
        split_dir.mkdir(parents=True)
        lines = []
        for r in kept:
            src = (out_dir / r["file_name"]).resolve()
            name = f"{r['sample_id']}{src.suffix}"
            _copy(src, split_dir / name)
            meta = {k: r[k] for k in IMAGEFOLDER_META}
            lines.append(json.dumps({"file_name": name, **meta}, ensure_ascii=False) + "\n")
            written += 1
        (split_dir / "metadata.jsonl").write_text("".join(lines), encoding="utf-8")
    return written


def label_folder(label: str | None) -> str:
    """A label as one folder name: tracked labels already are (letters, digits, - _ .); imported ones may not."""
    name = re.sub(r"[^\w.-]+", "_", label or "").strip("._") or UNLABELLED
    return name


def _write_per_label(rows: list[Row], out_dir: Path, stage: Path) -> int:
    """Kept crops under <split>/<label>/, the domain folders StarGAN v2 (and torchvision ImageFolder) read."""
    written = 0
    for split in SPLITS:
        for r in _kept(rows, split):
            src = (out_dir / r["file_name"]).resolve()
            folder = stage / split / label_folder(r["label"])
            folder.mkdir(parents=True, exist_ok=True)
            _copy(src, folder / f"{r['sample_id']}{src.suffix}")
            written += 1
    return written


LAYOUT_WRITERS: dict[str, Callable[[list[Row], Path, Path], int]] = {
    "imagefolder": _write_imagefolder, "per-label": _write_per_label}


def publish_layout(layout: str, rows: list[Row], out_dir: Path) -> int:
    """Build the layout's train/ and val/ in a staging folder beside them, then swap each in by rename.

    A kill while building leaves only the staging folder (named like media's temp files, so the next export
    removes it); the old layout stays whole until the swap, and a split with no kept face is removed."""
    media.remove_stale_parts(out_dir)
    stage = out_dir / f"{media.PART_PREFIX}{os.getpid()}-layout"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        written = LAYOUT_WRITERS[layout](rows, out_dir, stage)
        for split in SPLITS:
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
