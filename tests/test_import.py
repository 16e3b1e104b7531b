"""import: recursive, content-addressed, idempotent, and never crashed by a bad file."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from facecurate import media
from facecurate.catalog import Catalog
from facecurate.ingest import import_paths
from facecurate.workspace import Workspace

GOOD_KINDS = {"good.jpg", "cmyk.jpg", "sixteen.png", "palette.gif", "rgba.png", "lossless.webp", "plain.bmp",
              "scan.tiff"}
BAD_REASONS = {"zero.jpg": "empty", "page.jpg": "not_an_image", "truncated.jpg": "truncated",
               "corrupt.png": "corrupt", "bomb.png": "too_large"}


def test_odd_files_never_crash_and_are_reported(ws: Workspace, catalog: Catalog, odd_images: dict[str, Path]):
    summary = import_paths(ws, catalog, [odd_images["good.jpg"].parent])
    # notes.txt is not an image extension; everything else is looked at, nested folders included.
    assert summary.found == len(odd_images) - 1
    assert summary.new == len(GOOD_KINDS)
    assert summary.duplicate == 1  # nested/deeper/copy_of_good.jpg
    assert {Path(f.item).name for f in summary.failed} == set(BAD_REASONS)
    assert summary.failed_by_reason == dict(Counter(BAD_REASONS.values()))
    for f in summary.failed:
        assert f.item in f.error  # the message names the file
    failed_rows = catalog.conn.execute("SELECT location, error FROM sources WHERE status='failed'").fetchall()
    assert {Path(r["location"]).name: r["error"] for r in failed_rows} == BAD_REASONS


def test_one_copy_per_content_every_source_recorded(ws: Workspace, catalog: Catalog, odd_images):
    import_paths(ws, catalog, [odd_images["good.jpg"].parent])
    sha = media.sha256_bytes(odd_images["good.jpg"].read_bytes())
    image = catalog.image_by_sha(sha)
    assert image is not None and image.path == f"raw/{sha[:2]}/{sha}.jpg"
    assert ws.resolve(image.path).read_bytes() == odd_images["good.jpg"].read_bytes()
    locations = {r["location"] for r in catalog.conn.execute("SELECT location FROM sources WHERE image_id=?",
                                                             (image.id,))}
    assert locations == {str(odd_images["good.jpg"]), str(odd_images["nested/deeper/copy_of_good.jpg"])}
    assert len(list(ws.raw_dir.rglob(f"{sha}*"))) == 1


def test_reimport_adds_nothing(ws: Workspace, catalog: Catalog, odd_images):
    folder = odd_images["good.jpg"].parent
    first = import_paths(ws, catalog, [folder])
    before = catalog.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    again = import_paths(ws, catalog, [folder])
    assert catalog.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == before
    assert again.new == 0 and again.duplicate == 0
    assert again.unchanged == first.new + first.duplicate
    # failures are retried (the user may have fixed them) and still reported
    assert {Path(f.item).name for f in again.failed} == set(BAD_REASONS)


def test_decoded_modes_become_rgb(odd_images):
    for name in GOOD_KINDS:
        decoded = media.load_rgb(odd_images[name], max_pixels=10**8, max_bytes=10**8)
        assert decoded.pixels.dtype == np.uint8 and decoded.pixels.shape[2] == 3, name
    sixteen = media.load_rgb(odd_images["sixteen.png"], 10**8, 10**8).pixels
    assert sixteen.max() > 128  # scaled from 16 bits, not clipped to black/white noise of the low byte


def test_exif_orientation_applied(ws: Workspace, catalog: Catalog, tmp_path: Path):
    arr = np.zeros((60, 100, 3), dtype=np.uint8)
    arr[:, :50] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    path = tmp_path / "rotated.jpg"
    path.write_bytes(buf.getvalue())
    import_paths(ws, catalog, [path])
    row = catalog.image_by_sha(media.sha256_bytes(buf.getvalue()))
    assert row is not None and (row.width, row.height) == (60, 100)
    pixels = media.load_rgb(path, 10**8, 10**8).pixels
    assert pixels.shape == (100, 60, 3)
    assert pixels[:40].mean() > 200 and pixels[-40:].mean() < 50  # white half now on top


def test_label_recorded(ws: Workspace, catalog: Catalog, demo_dir: Path):
    import_paths(ws, catalog, [demo_dir / "obama.jpg"], label="makeup")
    assert catalog.conn.execute("SELECT label FROM images").fetchone()[0] == "makeup"
    assert catalog.conn.execute("SELECT label FROM sources").fetchone()[0] == "makeup"


def test_no_temp_files_left(ws: Workspace, catalog: Catalog, odd_images):
    import_paths(ws, catalog, [odd_images["good.jpg"].parent])
    assert not [p for p in ws.root.rglob(f"{media.PART_PREFIX}*")]


def test_stale_parts_of_dead_processes_are_removed(tmp_path: Path):
    dead = tmp_path / f"{media.PART_PREFIX}999999999-x.jpg"  # no such pid
    import os

    alive = tmp_path / f"{media.PART_PREFIX}{os.getpid()}-y.jpg"
    dead.write_bytes(b"half")
    alive.write_bytes(b"in progress")
    assert media.remove_stale_parts(tmp_path) == 1
    assert not dead.exists() and alive.exists()
