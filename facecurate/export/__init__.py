"""``export``: the manifest (every row, whatever its state) and the dataset layouts (only what is kept)."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from facecurate import __version__, media
from facecurate.catalog import Catalog, utc_now
from facecurate.errors import ExportError
from facecurate.events import SILENT, Progress
from facecurate.export.layouts import LAYOUT_WRITERS, LAYOUTS, label_folder, publish_layout
from facecurate.export.manifest import FIELDS, FORMATS, WRITERS, arrow_table, manifest_rows
from facecurate.workspace import Workspace, check_choice, options_from


@dataclass(frozen=True)
class ExportOptions:
    """The [export] settings of one export, with command-line overrides."""

    format: str
    layout: str
    seed: int
    val_fraction: float

    @classmethod
    def from_config(cls, ws: Workspace, **overrides: object) -> ExportOptions:
        opts = options_from(cls, ws.config(), "export", **overrides)
        check_choice("export", "format", opts.format, "--format")
        check_choice("export", "layout", opts.layout, "--layout")
        return opts


@dataclass
class ExportSummary:
    manifest: Path
    sidecar: Path
    format: str
    rows: int
    counts: dict[str, int] = field(default_factory=dict)      # rows per state
    reasons: dict[str, int] = field(default_factory=dict)     # rows per reason
    layout: str = "none"
    layout_dir: Path | None = None
    layout_files: int = 0


def export(ws: Workspace, catalog: Catalog, opts: ExportOptions | None = None, *, out_dir: Path | None = None,
           fmt: str | None = None, layout: str | None = None, progress: Progress = SILENT) -> ExportSummary:
    """Write the manifest, its sidecar and the layout (if any) under ``out_dir`` (default: WORKSPACE/exports)."""
    opts = opts or ExportOptions.from_config(ws, format=fmt, layout=layout)
    cfg = ws.config()
    out = (out_dir or ws.exports_dir).resolve()
    claim(out, ws)
    progress.start("export", None, "rows")
    rows = manifest_rows(ws, catalog, out, seed=opts.seed, val_fraction=opts.val_fraction)
    manifest = out / f"manifest.{opts.format}"
    WRITERS[opts.format](rows, manifest)
    by_status = Counter(r["status"] for r in rows)
    by_reason = Counter(reason for r in rows for reason in r["reasons"])
    layout_dir, layout_files = None, 0
    if opts.layout in LAYOUT_WRITERS:
        layout_files = publish_layout(opts.layout, rows, out)
        layout_dir = out
    sidecar = out / "manifest.json"
    info = {"tool": "facecurate", "version": __version__, "created_at": utc_now(), "workspace": str(ws.root),
            "manifest": manifest.name, "format": opts.format, "rows": len(rows), "layout": opts.layout,
            "counts": {"status": dict(by_status), "reasons": dict(by_reason)}, "config": cfg.as_dict()}
    media.atomic_write(sidecar, (json.dumps(info, indent=2, ensure_ascii=False) + "\n").encode())
    for written in (manifest, sidecar):
        _readable(written)
    progress.finish(len(rows))
    return ExportSummary(manifest, sidecar, opts.format, len(rows), dict(by_status), dict(by_reason), opts.layout,
                         layout_dir, layout_files)


MARKER = ".facecurate-export"  # this folder's manifest.*, train/ and val/ are facecurate's to replace


def claim(out: Path, ws: Workspace) -> None:
    """Make ``out`` an export folder, or refuse: export replaces its manifest and layout folders wholesale, so it
    writes only into a folder it made (the marker), an empty one, or the workspace's own ``exports/``."""
    out.mkdir(parents=True, exist_ok=True)
    marker = out / MARKER
    if marker.exists():
        return
    if out != ws.exports_dir.resolve() and any(p.name != MARKER for p in out.iterdir()):
        raise ExportError(f"{out} already holds files facecurate did not write, and an export replaces "
                          f"manifest.*, train/ and val/ there. Export into a new or empty folder (--out), or "
                          f"into the workspace's own exports/.")
    marker.write_text("facecurate writes exports here: manifest.*, manifest.json, train/ and val/ are replaced by "
                      "each export.\n", encoding="utf-8")


def _readable(path: Path) -> None:
    """Temp files are created 0600; an export is for a training job that may run as another user: the permissions
    the user's umask gives any new file."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


__all__ = ["FIELDS", "FORMATS", "LAYOUTS", "MARKER", "ExportOptions", "ExportSummary", "arrow_table", "claim",
           "export", "label_folder", "manifest_rows"]
