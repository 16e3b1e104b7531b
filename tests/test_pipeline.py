"""run: the whole pipeline on a loopback Bing serving the bundled photos (real HTTP, real SQLite, real MTCNN).

The summary must agree with the catalog and the manifest, a second run must do nothing new, ``--stages`` must
touch only the stages named, and a failing stage must be reported with a non-zero exit, never skipped silently.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageOps
from rich.console import Console
from typer.testing import CliRunner

from facecurate import output
from facecurate.catalog import Catalog
from facecurate.cli import app
from facecurate.crawl.queries import add_terms
from facecurate.pipeline import STAGES, RunOptions, RunSummary, run_pipeline
from facecurate.workspace import Workspace
from tests.fakeweb import (
    BLOCKED_TERM,
    FakeEngines,
    ImageHost,
    Item,
    LoopbackServer,
    Reply,
    Request,
    items_for,
    write_config,
)

LABELS = {"makeup": ("makeup look", ["obama.jpg", "obama2.jpg", "obama_mirrored.jpg", "obama_partial_face.jpg"]),
          "plain": ("plain portrait", ["biden.jpg", "astronaut.jpg", "obama3.jpg", "rocket_no_face.jpg"])}
runner = CliRunner()


class PhotoHost:
    """An image host on 127.0.0.1 serving the bundled photos and a mirrored, recompressed copy of one."""

    def __init__(self, demo_dir: Path) -> None:
        self.files = {p.name: p.read_bytes() for p in demo_dir.glob("*.jpg")}
        buf = io.BytesIO()
        with Image.open(demo_dir / "obama.jpg") as im:
            ImageOps.mirror(im).save(buf, "JPEG", quality=70)
        self.files["obama_mirrored.jpg"] = buf.getvalue()
        self.server = LoopbackServer(self.handle)

    def handle(self, req: Request) -> Reply:
        data = self.files.get(req.path.removeprefix("/photo/"))
        return Reply(body=data, headers={"Content-Type": "image/jpeg"}) if data else Reply(404, b"not found")

    def items(self, names: list[str]) -> list[Item]:
        return [Item(self.server.url(f"/photo/{n}"), f"http://example.org/{n}", n) for n in names]

    def photo_requests(self) -> int:
        return sum(1 for r in self.server.requests if r.path.startswith("/photo/"))


@pytest.fixture
def web(demo_dir: Path) -> Iterator[tuple[PhotoHost, FakeEngines]]:
    host = PhotoHost(demo_dir)
    with host.server:
        engines = FakeEngines({term: host.items(names) for term, names in LABELS.values()})
        engines.results[BLOCKED_TERM] = []
        with engines.server:
            yield host, engines


def _workspace(ws: Workspace, catalog: Catalog, engines: FakeEngines, labels: dict[str, list[str]]) -> None:
    """Loopback engines, small crops on the CPU, and the tracked terms."""
    write_config(ws.root, engines.server.base)
    with ws.config_path.open("a", encoding="utf-8") as fh:
        fh.write('[crop]\nsize = 128\ndevice = "cpu"\n')
    for label, terms in labels.items():
        add_terms(ws, catalog, label, terms)


def _run(ws: Workspace, catalog: Catalog, **opts: object) -> RunSummary:
    return run_pipeline(ws, catalog, RunOptions(device="cpu", **opts))  # type: ignore[arg-type]


def _manifest_counts(path: Path) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        out.setdefault(row["label"], Counter())[row["status"]] += 1
    return out


def test_run_end_to_end_matches_the_catalog_then_does_nothing_new(ws: Workspace, catalog: Catalog, web):
    host, engines = web
    _workspace(ws, catalog, engines, {label: [term] for label, (term, _) in LABELS.items()})
    summary = _run(ws, catalog)
    assert [s.state for s in summary.stages] == ["done"] * 5 and summary.error is None

    total = summary.total
    assert {lb: c.found for lb, c in summary.labels.items()} == {"makeup": 4, "plain": 4}
    assert total.new == total.images == 8 == catalog.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    sql = catalog.conn.execute
    faces_by = {(lb, st): n for lb, st, n in sql(
        "SELECT i.label, s.state, COUNT(*) FROM item_state s JOIN images i ON i.id=s.image_id "
        "WHERE s.face_id IS NOT NULL GROUP BY 1, 2")}
    no_face = dict(sql("SELECT label, COUNT(*) FROM images WHERE crop_state='no_face' AND dup_of IS NULL GROUP BY 1"))
    manifest = _manifest_counts(summary.manifest)  # type: ignore[arg-type]
    for label, counts in summary.labels.items():
        assert counts.kept == faces_by.get((label, "keep"), 0) == manifest[label]["keep"]
        assert counts.rejected == faces_by.get((label, "reject"), 0) == manifest[label]["reject"]
        assert counts.no_face == no_face.get(label, 0) == manifest[label]["no_face"]
        assert counts.duplicates == manifest[label]["duplicate"]
        assert counts.pending == counts.failed_count == 0
    assert summary.labels["plain"].no_face == 1  # the rocket
    assert summary.labels["makeup"].duplicates >= 1  # the mirrored, recompressed copy
    assert sql("SELECT COUNT(*) FROM images WHERE dup_of IS NOT NULL").fetchone()[0] == 1
    # Every reason that fired is listed, counted as in the catalog.
    rule_reasons = Counter(r for (reasons,) in sql("SELECT f.reasons FROM faces f JOIN item_state s "
                                                   "ON s.face_id = f.id WHERE s.state='reject'")
                           for r in json.loads(reasons))
    assert Counter(total.rejected_by_reason) == rule_reasons + Counter(duplicate=total.duplicates,
                                                                       no_face=total.no_face)
    assert {"duplicate", "no_face"} <= set(total.rejected_by_reason)
    kept_files = list((ws.exports_dir / "imagefolder").glob("*/*.jpg"))  # imagefolder by default
    assert len(kept_files) == total.kept > 0

    # Second run: nothing pending, nothing new fetched, hashed, cropped or measured; same counts.
    fetched = host.photo_requests()
    again = _run(ws, catalog)
    assert again.error is None and host.photo_requests() == fetched
    results = {s.name: s.result for s in again.stages}
    assert results["crawl"].searches == [] and "nothing pending" in again.stage("crawl").detail  # type: ignore[union-attr]
    assert results["dedup"].photo_level.hashed == results["dedup"].face_level.hashed == 0  # type: ignore[union-attr]
    assert results["crop"].images == 0 and results["filter"].measured == 0  # type: ignore[union-attr]
    assert again.total.new == 0
    assert {lb: output.jsonable(c) | {"new": 0} for lb, c in again.labels.items()} == \
        {lb: output.jsonable(c) | {"new": 0} for lb, c in summary.labels.items()}
    # The closing table names every stage and every reason.
    out = Console(file=io.StringIO(), width=200)
    out.print(output.run_view(again))
    text = out.file.getvalue()  # type: ignore[attr-defined]
    assert all(name in text for name in STAGES) and "no_face" in text and "duplicate" in text

    # `status` tells the same story: rejects by reason, duplicates (with the mirror), per query.
    shown = CliRunner().invoke(app, ["status", "-w", str(ws.root)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "1 duplicate photos in 1 groups (hflip 1)" in shown.output
    for reason, n in rule_reasons.items():
        assert f"{reason} {n}" in shown.output
    assert all(term in shown.output for term, _ in LABELS.values())


def test_stages_subset_touches_only_those_stages_and_a_full_run_resumes(ws: Workspace, catalog: Catalog, web):
    _host, engines = web
    _workspace(ws, catalog, engines, {"plain": [LABELS["plain"][0]]})
    first = _run(ws, catalog, stages=("crawl", "dedup"))
    assert [s.state for s in first.stages] == ["done", "done", "not selected", "not selected", "not selected"]
    assert first.total.images == first.total.pending == 4 and first.total.kept == 0  # found, not cropped
    assert not list(ws.exports_dir.rglob("manifest.*"))

    searches = len(engines.server.requests)
    subset = _run(ws, catalog, stages=("crop", "filter"))
    assert [s.state for s in subset.stages] == ["not selected", "not selected", "done", "done", "not selected"]
    assert len(engines.server.requests) == searches  # no crawl
    assert subset.stage("crop").result.images == 4  # type: ignore[union-attr]
    assert not list(ws.exports_dir.rglob("manifest.*"))  # no export
    assert subset.total.pending == 0 and subset.total.kept + subset.total.rejected == 3
    assert subset.total.no_face == 1

    rest = _run(ws, catalog)  # the full run goes on from there: nothing to crawl or crop, then the export
    assert rest.stage("crop").result.images == 0 and rest.stage("crawl").result.searches == []  # type: ignore
    assert rest.manifest is not None and rest.manifest.is_file()
    assert rest.total.kept == subset.total.kept


def test_blocked_search_is_reported_exit_3_and_the_rest_runs_on_the_catalog(ws: Workspace, catalog: Catalog, web):
    host, engines = web
    engines.results["two photos"] = host.items(["obama2.jpg", "rocket_no_face.jpg"])
    _workspace(ws, catalog, engines, {"plain": ["two photos", BLOCKED_TERM]})
    result = runner.invoke(app, ["run", "-w", str(ws.root), "--device", "cpu", "--layout", "per-label", "--json"])
    assert result.exit_code == 3, result.output
    data = json.loads(result.stdout)
    states = {s["name"]: s["state"] for s in data["stages"]}
    assert states == {"crawl": "blocked", "dedup": "done", "crop": "done", "filter": "done", "export": "done"}
    assert not data["ok"] and "bing" in data["error"] and "resumes" in data["error"]
    assert "already holds (2 images)" in data["error"]
    assert data["total"]["images"] == 2 and data["total"]["no_face"] == 1
    assert (ws.exports_dir / "per-label" / "train" / "plain").is_dir()  # the export ran, per label
    assert "blocked" in result.stderr  # said at once, not only at the end


def test_a_failing_stage_skips_the_later_ones_and_says_so(ws: Workspace, catalog: Catalog, web):
    _host, engines = web
    _workspace(ws, catalog, engines, {"plain": [LABELS["plain"][0]]})
    with ws.config_path.open("a", encoding="utf-8") as fh:
        fh.write('[dedup]\nkeeper = "prettiest"\n')
    result = runner.invoke(app, ["run", "-w", str(ws.root), "--device", "cpu"])
    assert result.exit_code == 1
    assert "keeper" in result.stderr and "Skipped crop, filter, export after dedup failed" in result.stderr
    assert "skipped" in result.stdout and "failed" in result.stdout  # in the closing table too
    assert catalog.conn.execute("SELECT COUNT(*) FROM images WHERE crop_state IS NOT NULL").fetchone()[0] == 0
    assert catalog.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 4  # the crawl itself finished
    assert not list(ws.exports_dir.rglob("manifest.*"))


def test_unknown_stage_or_query_is_a_clear_error_before_anything_runs(ws: Workspace, catalog: Catalog, web):
    _host, engines = web
    _workspace(ws, catalog, engines, {"plain": [LABELS["plain"][0]]})
    bad = runner.invoke(app, ["run", "-w", str(ws.root), "--stages", "crop,cropp"])
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert "'cropp'" in bad.stderr and "crawl, dedup, crop, filter, export" in bad.stderr
    unknown = runner.invoke(app, ["run", "-w", str(ws.root), "--query", "never added"])
    assert unknown.exit_code == 1 and "'never added'" in unknown.stderr and "queries add" in unknown.stderr
    assert not engines.server.requests and catalog.conn.execute("SELECT COUNT(*) FROM query_runs").fetchone()[0] == 0


def test_kill_minus_9_mid_run_then_run_again_finishes_without_refetching(ws: Workspace, catalog: Catalog):
    n = 24
    host = ImageHost(delay=0.2)  # slow enough for the kill to land while images arrive
    with host.server:
        engines = FakeEngines({"slow faces": items_for(host, list(range(1, n + 1)))})
        with engines.server:
            _workspace(ws, catalog, engines, {"faces": ["slow faces"]})
            proc = subprocess.Popen([sys.executable, "-m", "facecurate", "run", "--limit", str(n), "-w", str(ws.root)],
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                if catalog.conn.execute("SELECT COUNT(*) FROM sources").fetchone()[0] >= 4:
                    break
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            before = {r[0] for r in catalog.conn.execute("SELECT location FROM sources WHERE status='ok'")}
            assert 0 < len(before) < n, "the kill should land mid-crawl"
            summary = _run(ws, catalog, limit=n)
    assert summary.error is None and len(summary.stage("crawl").result.searches) == 1  # type: ignore[union-attr]
    total = summary.total
    assert total.found == total.images == n and total.pending == 0
    assert total.kept + total.rejected + total.duplicates + total.no_face == \
        len(summary.manifest.read_text().splitlines())  # type: ignore[union-attr]
    for url in before:  # stored before the kill: not fetched again
        assert host.server.hits(url.removeprefix(host.server.base)) == 1
