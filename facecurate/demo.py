"""``facecurate demo``: the pipeline offline on the bundled public-domain photos.

It uses the same stage functions as the real commands, in a fresh workspace, so a newcomer sees exactly
what their own run will do.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from facecurate.catalog import Catalog
from facecurate.export import export
from facecurate.faces.crop import CropOptions, run_crop
from facecurate.ingest import import_paths
from facecurate.rules.stage import run_filter
from facecurate.workspace import init_workspace

DEMO_DATA = Path(__file__).parent / "demo_data"


def demo_photos() -> list[Path]:
    return sorted(p for p in DEMO_DATA.iterdir() if p.suffix.lower() in (".jpg", ".png"))


def run_demo(console: Console, out: Path | None, device: str, progress_factory: Callable[[], Progress]) -> Path:
    """Import → crop → filter → export in a new workspace; returns the manifest path."""
    root = out or Path(tempfile.mkdtemp(prefix="facecurate-demo-"))
    ws = init_workspace(root)
    console.print(f"[bold]facecurate demo[/] — workspace {ws.root}")
    with Catalog.open(ws.catalog_path) as catalog:
        with progress_factory() as bar:
            task = bar.add_task("import", total=None, rate="")
            imported = import_paths(ws, catalog, [DEMO_DATA], label="demo",
                                    on_found=lambda n: bar.update(task, total=n),
                                    on_progress=lambda n: bar.advance(task, n))
            ctask = bar.add_task("crop", total=None, rate="")
            cropped = run_crop(ws, catalog, CropOptions.from_config(ws, device=device),
                               on_start=lambda n, dev: bar.update(ctask, total=n, description=f"crop ({dev})"),
                               on_progress=lambda n: bar.advance(ctask, n))
            ftask = bar.add_task("filter", total=None, rate="")
            filtered = run_filter(ws, catalog, on_start=lambda n: bar.update(ftask, total=n),
                                  on_progress=lambda n: bar.advance(ftask, n))
        result = export(ws, catalog, fmt="jsonl", layout="imagefolder")
        faces = catalog.conn.execute(
            "SELECT (SELECT location FROM sources s WHERE s.image_id = f.image_id ORDER BY s.id LIMIT 1) AS source, "
            "f.det_score, f.oob_fraction, f.above_fraction, f.eye_angle, f.status, f.reasons "
            "FROM faces f ORDER BY source").fetchall()
    table = Table(title="demo: aligned face crops")
    for col in ("photo", "outside", "eye angle", "status", "reasons"):
        table.add_column(col, no_wrap=col in ("photo", "reasons"))
    for r in faces:
        table.add_row(Path(r["source"]).name, f"{r['oob_fraction']:.0%}", f"{r['eye_angle']:+.1f}°", r["status"],
                      ", ".join(json.loads(r["reasons"])) or "-")
    console.print(table)
    console.print(f"imported {imported.new} photos ({imported.duplicate} exact duplicates, "
                  f"{len(imported.failed)} failed); {cropped.faces} faces cropped, {cropped.no_face} without a face; "
                  f"rules kept {filtered.kept} and rejected {filtered.rejected}")
    console.print(f"[green]manifest[/] {result.manifest}\n[green]imagefolder[/] {result.layout_dir} "
                  f"({result.layout_files} kept crops)")
    return result.manifest
