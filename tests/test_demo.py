"""`facecurate demo`: the whole pipeline offline, run once for the module (it crops ~20 photos on the CPU)."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pyarrow.parquet as pq
import pytest
from rich.console import Console

from facecurate import output
from facecurate.catalog import Catalog
from facecurate.crawl.engines.bing import parse_results
from facecurate.demo import DEMO_PHOTOS, LANDMARKS, QUERIES, build_results, run_demo
from facecurate.demo_engine import PAGE_SIZE, DemoEngine, Listing
from facecurate.pipeline import RunOptions, run_pipeline
from facecurate.rules.registry import RULES
from facecurate.workspace import Workspace


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, list[dict[str, Any]], str]:
    result = run_demo(tmp_path_factory.mktemp("demo") / "ws", "cpu")
    assert result.run.ok and result.run.manifest is not None
    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    console.print(output.run_view(result.run))
    console.print(output.demo_view(result.outcomes))
    assert all(o.shown for o in result.outcomes), [o for o in result.outcomes if not o.shown]
    rows = [json.loads(line) for line in result.run.manifest.read_text(encoding="utf-8").splitlines()]
    return result.run.manifest, rows, console.file.getvalue()  # type: ignore[attr-defined]


def _by_photo(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["source_url"].rsplit("/", 1)[-1]: r for r in rows if r["source_url"]}


def test_every_reason_fires_and_each_photo_shows_what_it_was_made_for(demo):
    manifest, rows, output = demo
    assert manifest.is_file() and manifest.with_name("manifest.json").is_file()
    rejected = {reason for r in rows if r["status"] == "reject" for reason in r["reasons"]}
    assert {rule.name for rule in RULES} - {"no_face"} <= rejected
    statuses = {r["status"] for r in rows}
    assert {"keep", "duplicate", "no_face"} <= statuses
    photos = _by_photo(rows)
    for photo in DEMO_PHOTOS:
        row = photos[photo.name]
        assert photo.shows in (row["status"], *row["reasons"]), (photo.name, row["status"], row["reasons"])
    assert "✗" not in output and "duplicate" in output and "product_shot" in output


def test_copies_are_duplicates_of_their_original(demo):
    _, rows, _ = demo
    photos = _by_photo(rows)
    for copy, original in (("obama_recompressed.jpg", "obama.jpg"), ("biden_mirrored.jpg", "biden.jpg")):
        assert photos[copy]["status"] == "duplicate"
        assert photos[copy]["dup_of"] == photos[original]["sample_id"]
        assert photos[original]["status"] == "keep"


def test_imagefolder_holds_only_the_kept_crops(demo):
    manifest, rows, _ = demo
    kept = {r["sample_id"] for r in rows if r["status"] == "keep"}
    assert manifest.parent.name == "imagefolder"  # the default layout, in its own folder under exports/
    files = {p.stem for p in manifest.parent.glob("*/*.jpg")}
    assert files == kept and len(kept) == sum(1 for p in DEMO_PHOTOS if p.shows == "keep")
    meta = pq.read_table(manifest.parent / "val" / "metadata.parquet").to_pylist()
    assert {m["label"] for m in meta} == set(QUERIES)  # each label has a face to validate on


def test_provenance_names_the_engine_query_and_loopback_urls(demo):
    _, rows, _ = demo
    crawled = [r for r in rows if r["source_url"]]
    assert len(crawled) == len(rows) == len(DEMO_PHOTOS)
    for r in crawled:
        assert r["engine"] == "bing" and r["query"] == QUERIES[r["label"]]
        assert r["source_url"].startswith("http://127.0.0.1:") and r["page_url"].startswith("http://127.0.0.1:")
        assert isinstance(r["rank"], int) and r["retrieved_at"]
    ranks = sorted(r["rank"] for r in crawled if r["label"] == "press")
    assert ranks == list(range(1, len(ranks) + 1))  # pages by first=: every rank once, none skipped


def test_landmark_table_matches_the_crop_stage(demo):
    _, rows, _ = demo
    photos = _by_photo(rows)
    for name, points in LANDMARKS.items():
        got = photos[name]["landmarks"]
        assert max(abs(a - b) for p, q in zip(got, points, strict=True) for a, b in zip(p, q, strict=True)) < 3.0


def _row_counts(catalog: Catalog) -> list[int]:
    return [catalog.conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("images", "sources", "faces")]


def test_running_the_pipeline_again_adds_nothing(demo):
    manifest, rows, _ = demo
    ws = Workspace(manifest.parents[2])
    with Catalog.open(ws.catalog_path) as catalog:
        counts = _row_counts(catalog)
        summary = run_pipeline(ws, catalog, RunOptions(device="cpu"))
        after = _row_counts(catalog)
    assert summary.error is None and after == counts and summary.total.new == 0
    assert summary.stage("crawl").result.searches == []  # type: ignore[union-attr]
    again = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    assert [(r["sample_id"], r["status"], r["reasons"]) for r in again] == \
        [(r["sample_id"], r["status"], r["reasons"]) for r in rows]


def test_engine_pages_in_bings_shape_and_frees_its_port():
    results = build_results()
    term = QUERIES["press"]
    with DemoEngine(results) as engine:
        base = engine.base_url
        seen: list[str] = []
        first = 1
        while True:
            with urlopen(f"{base}/images/async?q={term.replace(' ', '+')}&first={first}&count=35") as resp:
                page = parse_results(resp.read().decode())
            if not page:
                break
            assert len(page) <= PAGE_SIZE
            seen += [r.url for r in page]
            first += len(page)
        assert seen == [f"{base}/photos/{it.name}" for it in results[term]]
        with urlopen(seen[0]) as resp:
            assert resp.read() == results[term][0].data
        port = int(base.rsplit(":", 1)[1])
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_engine_stops_on_an_error_inside_its_block():
    with pytest.raises(RuntimeError), DemoEngine({"t": [Listing("a.jpg", "a", b"x", 1, 1)]}) as engine:
        port = engine.httpd.server_address[1]
        raise RuntimeError("boom")
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
