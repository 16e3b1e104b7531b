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
from facecurate.export import card
from facecurate.export.layouts import (
    LAYOUT_DIRS,
    LAYOUT_WRITERS,
    LAYOUTS,
    cyclegan_domains,
    imagefolder_labels,
    imagefolder_schema,
    label_folder,
    publish_layout,
)
from facecurate.export.licenses import license_family, parse_families
from facecurate.export.manifest import (
    FIELDS,
    FORMATS,
    WRITERS,
    Row,
    arrow_table,
    is_carried,
    manifest_rows,
    score_names,
)
from facecurate.filestore import mirror_files
from facecurate.workspace import EXPORT_MARKER, Workspace, check_choice, options_from

# Layouts whose consumers need a validation folder for every label (StarGAN v2's val/, CycleGAN's testA/testB):
# they get min_val_per_label validation faces per label even at val_fraction 0.
NEEDS_VAL = frozenset({"per-label", "cyclegan"})


@dataclass(frozen=True)
class ExportOptions:
    """The [export] settings of one export, with command-line overrides."""

    format: str
    layout: str
    seed: int
    val_fraction: float
    min_val_per_label: int
    licenses: str

    @classmethod
    def from_config(cls, ws: Workspace, **overrides: object) -> ExportOptions:
        opts = options_from(cls, ws.config(), "export", **overrides)
        check_choice("export", "format", opts.format, "--format")
        check_choice("export", "layout", opts.layout, "--layout")
        return opts

    @property
    def min_val(self) -> int:
        """The per-label validation minimum in force for this layout (see NEEDS_VAL)."""
        return self.min_val_per_label if self.layout in NEEDS_VAL or self.val_fraction > 0 else 0

    @property
    def families(self) -> tuple[str, ...]:
        return parse_families(self.licenses)


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
    card: Path | None = None                                  # the dataset card (README.md), if written
    splits: dict[str, dict[str, int]] = field(default_factory=dict)  # label -> faces per split, in the layout
    left_out: dict[str, int] = field(default_factory=dict)    # kept faces the licence filter left out, by family
    notes: list[str] = field(default_factory=list)


def default_dir(ws: Workspace, layout: str) -> Path:
    """Where an export goes without --out: ``exports/`` for the manifest alone, ``exports/LAYOUT/`` for a layout,
    so exports of different layouts never replace each other."""
    return ws.exports_dir if layout == "none" else ws.exports_dir / layout


def export(ws: Workspace, catalog: Catalog, opts: ExportOptions | None = None, *, out_dir: Path | None = None,
           fmt: str | None = None, layout: str | None = None, licenses: str | None = None,
           progress: Progress = SILENT) -> ExportSummary:
    """Write the manifest, its sidecar, the dataset card and the layout (if any) under ``out_dir`` (default:
    :func:`default_dir`). The manifest has every row; the layout the kept faces whose licence family passes."""
    opts = opts or ExportOptions.from_config(ws, format=fmt, layout=layout, licenses=licenses)
    cfg = ws.config()
    out = (out_dir or default_dir(ws, opts.layout)).resolve()
    families = opts.families

    def carried(r: Row) -> bool:
        return is_carried(r) and (not families or license_family(r["license"]) in families)

    progress.start("export", None, "rows")
    rows = manifest_rows(ws, catalog, out, seed=opts.seed, val_fraction=opts.val_fraction, min_val=opts.min_val,
                         carried=carried)
    in_layout = [r for r in rows if carried(r)] if opts.layout != "none" else []
    domains = cyclegan_domains(in_layout) if opts.layout == "cyclegan" else {}  # refused before anything is written
    left_out = dict(Counter(license_family(r["license"]) for r in rows if is_carried(r) and not carried(r)))
    claim(out, ws)
    mirror_files(ws, [os.path.relpath((out / r["file_name"]).resolve(), ws.root) for r in rows if r.get("file_name")],
                 int(cfg.get("media", "max_bytes")))
    # A crop deleted from the workspace (or missing from [run] storage) leaves its face out of the layout, with a
    # note: its manifest row stays, and one lost file does not stop the export half-way.
    missing = [r for r in in_layout if not os.path.isfile(out / r["file_name"])]
    in_layout = [r for r in in_layout if os.path.isfile(out / r["file_name"])] if missing else in_layout
    manifest = out / f"manifest.{opts.format}"
    WRITERS[opts.format](rows, manifest)
    for other in FORMATS:  # one export's manifest formats replace the previous export's as a set
        if other != opts.format:
            (out / f"manifest.{other}").unlink(missing_ok=True)
    by_status = Counter(r["status"] for r in rows)
    by_reason = Counter(reason for r in rows for reason in r["reasons"])
    # A manifest-only export leaves layout folders alone: in an exports/ from before layouts had folders of their
    # own, train/ and val/ are the last layout a user made, and a bare manifest is no reason to delete it.
    layout_files = publish_layout(opts.layout, in_layout, out) if opts.layout in LAYOUT_WRITERS else 0
    layout_dir = out if opts.layout in LAYOUT_WRITERS else None
    splits: dict[str, dict[str, int]] = {}
    for r in in_layout:
        per = splits.setdefault(label_folder(r["label"]), {"train": 0, "val": 0})
        per[r["split"]] += 1
    notes = [f"{label}: {n['train']} kept face(s), none for validation (it needs two or more, in two duplicate "
             f"families); {opts.layout} wants a validation folder per label."
             for label, n in sorted(splits.items()) if opts.layout in NEEDS_VAL and not n["val"]]
    if missing:
        notes.append(f"{len(missing)} kept face(s) left out of the {opts.layout} layout: their crop file is missing "
                     f"(first: {(out / missing[0]['file_name']).resolve()}). Run `facecurate crop --redo` to cut "
                     f"them again, then export again.")
    created = utc_now()
    facts = card.CardFacts(rows, in_layout if opts.layout != "none" else [r for r in rows if carried(r)],
                           opts.layout, families, left_out, cfg.as_dict(), __version__, created,
                           catalog.tracked_queries(), catalog.latest_runs(), _hf_configs(opts.layout, in_layout, out),
                           domains)
    card_path = _write_card(out, card.render(facts), notes)
    sidecar = out / "manifest.json"
    info = {"tool": "facecurate", "version": __version__, "created_at": created, "workspace": str(ws.root),
            "manifest": manifest.name, "format": opts.format, "rows": len(rows), "layout": opts.layout,
            "counts": {"status": dict(by_status), "reasons": dict(by_reason)}, "splits": splits,
            "licenses": list(families), "left_out": {"license": left_out, "missing_crop": len(missing)},
            "domains": domains,
            "config": cfg.as_dict()}
    media.atomic_write(sidecar, (json.dumps(info, indent=2, ensure_ascii=False) + "\n").encode())
    for written in (manifest, sidecar, card_path):
        if written is not None:
            _readable(written)
    progress.finish(len(rows))
    return ExportSummary(manifest, sidecar, opts.format, len(rows), dict(by_status), dict(by_reason), opts.layout,
                         layout_dir, layout_files, card_path, splits, left_out, notes)


def _hf_configs(layout: str, rows: list[Row], out: Path) -> list[dict[str, object]]:
    """The card's ``configs``: which folder is which split, for ``datasets.load_dataset(folder)``; imagefolder
    adds its features (``label`` a ClassLabel). CycleGAN's four folders and a bare manifest have no HF loader
    shape, so no configs."""
    if layout not in ("imagefolder", "per-label") or not rows:
        return []
    present = sorted({r["split"] for r in rows}, key=["train", "val"].index)
    files = [{"split": "train" if s == "train" else "validation", "path": f"{s}/**"} for s in present]
    config: dict[str, object] = {"config_name": "default", "data_files": files}
    if layout == "imagefolder":
        config["features"] = imagefolder_schema(imagefolder_labels(rows), score_names(rows))[1]
    return [config]


def _write_card(out: Path, text: str, notes: list[str]) -> Path | None:
    """README.md, unless one is there that facecurate did not write (the workspace's exports/ may hold the
    user's own): that one is left alone, and a note says so."""
    path = out / card.CARD_NAME
    if path.exists() and card.CARD_MARK not in path.read_text(encoding="utf-8", errors="replace"):
        notes.append(f"{path} is not a card facecurate wrote: left as it is, no dataset card written.")
        return None
    media.atomic_write(path, text.encode())
    return path


def claim(out: Path, ws: Workspace) -> None:
    """Make ``out`` an export folder, or refuse: export replaces its manifest and layout folders wholesale, so it
    writes only into a folder it made (the marker), an empty one, or the workspace's own ``exports/``."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        held = [p.name for p in out.iterdir()]
    except OSError as exc:  # a file of that name, a file above it, a name too long, a folder not ours to write
        raise ExportError(f"Cannot export into {out}: {exc.strerror or exc}. Pass --out a folder that exists or can "
                          f"be created, and that you can write.") from exc
    marker = out / EXPORT_MARKER
    if marker.exists():
        return
    if out != ws.exports_dir.resolve() and any(name != EXPORT_MARKER for name in held):
        raise ExportError(f"{out} already holds files facecurate did not write, and an export replaces "
                          f"manifest.*, README.md and the layout folders ({', '.join(LAYOUT_DIRS)}) there. Export "
                          f"into a new or empty folder (--out), or into the workspace's own exports/.")
    marker.write_text(f"facecurate writes exports here: manifest.*, manifest.json, README.md and "
                      f"{', '.join(f'{d}/' for d in LAYOUT_DIRS)} are replaced by each export.\n", encoding="utf-8")


def _readable(path: Path) -> None:
    """Temp files are created 0600; an export is for a training job that may run as another user: the permissions
    the user's umask gives any new file."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


__all__ = ["FIELDS", "FORMATS", "LAYOUTS", "NEEDS_VAL", "ExportOptions", "ExportSummary", "arrow_table",
           "claim", "default_dir", "export", "label_folder", "manifest_rows"]
