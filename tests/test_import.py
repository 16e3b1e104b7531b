"""import: recursive, content-addressed, idempotent, and never crashed by a bad file."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecurate import media
from facecurate.catalog import Catalog
from facecurate.errors import ImageError
from facecurate.ingest import ImportSummary, import_paths
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


@pytest.mark.parametrize("mode, dtype, value, grey", [
    ("I;16B", ">u2", 40000, 156),  # a 16-bit TIFF in Motorola byte order (MM): Macs and scanners write them
    ("I;16", "<u2", 40000, 156),
    ("F", "<f4", 0.5, 128),        # float TIFFs hold 0..1 (HDR and scientific tools); 255 would make them black
    ("F", "<f4", 200.0, 200),
])
def test_wide_grey_tiffs_decode_to_their_brightness(mode: str, dtype: str, value: float, grey: int):
    im = Image.frombytes(mode, (64, 48), np.full((48, 64), value, dtype).tobytes())
    buf = io.BytesIO()
    im.save(buf, "TIFF")
    assert buf.getvalue()[:2] == (b"MM" if dtype.startswith(">") else b"II")
    pixels = media.decode(buf.getvalue(), f"{mode}.tif", 10**8).pixels
    assert pixels.shape == (48, 64, 3) and abs(int(pixels.mean()) - grey) <= 1, (mode, value, pixels.mean())


def test_a_file_name_that_is_not_utf8_imports_and_is_recorded_escaped(ws: Workspace, catalog: Catalog,
                                                                       tmp_path: Path, demo_dir: Path):
    folder = tmp_path / "latin1"
    folder.mkdir()
    name = os.fsencode(folder) + b"/caf\xe9 \xff.jpg"  # a Latin-1 name from an old camera or a zip
    with open(name, "wb") as fh:
        fh.write((demo_dir / "obama.jpg").read_bytes())
    summary = import_paths(ws, catalog, [folder], label="x")
    assert summary.new == 1 and not summary.failed
    (location,) = catalog.conn.execute("SELECT location FROM sources").fetchone()
    assert location == str(folder / "caf\\xe9 \\xff.jpg")
    again = import_paths(ws, catalog, [folder], label="x")
    assert again.unchanged == 1 and again.new == 0


def test_a_workspace_and_exports_inside_an_imported_folder_are_not_imported_again(
        ws: Workspace, catalog: Catalog, tmp_path: Path, demo_dir: Path):
    from facecurate.workspace import EXPORT_MARKER

    shutil.copy(demo_dir / "obama.jpg", ws.root / "photo.jpg")
    for own in ("raw/ab", "crops/cd", "exports/per-label/train/x"):
        (ws.root / own).mkdir(parents=True, exist_ok=True)
        shutil.copy(demo_dir / "biden.jpg", ws.root / own / "made.jpg")
    export = tmp_path / "elsewhere" / "export"
    (export / "train" / "y").mkdir(parents=True)
    (export / EXPORT_MARKER).write_text("")
    shutil.copy(demo_dir / "astronaut.jpg", export / "train" / "y" / "crop.jpg")
    summary = import_paths(ws, catalog, [ws.root, tmp_path / "elsewhere", ws.root / "photo.jpg"])
    assert summary.new == 1 and summary.found == 1 and not summary.failed  # photo.jpg once, though reached twice
    assert {Path(f.item).name for f in summary.skipped} == {"raw", "crops", "exports", "export"}
    assert catalog.conn.execute("SELECT COUNT(*) FROM sources").fetchone()[0] == 1


def test_a_linked_folder_is_listed_as_not_followed(ws: Workspace, catalog: Catalog, tmp_path: Path, demo_dir: Path):
    elsewhere = tmp_path / "disk2" / "2019"
    elsewhere.mkdir(parents=True)
    shutil.copy(demo_dir / "obama.jpg", elsewhere / "a.jpg")
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(demo_dir / "biden.jpg", photos / "b.jpg")
    (photos / "2019").symlink_to(elsewhere, target_is_directory=True)
    summary = import_paths(ws, catalog, [photos])
    assert summary.new == 1 and [Path(f.item).name for f in summary.skipped] == ["2019"]
    assert "not followed" in summary.skipped[0].error and str(photos / "2019") in summary.skipped[0].error
    assert import_paths(ws, catalog, [photos / "2019"]).new == 1  # what the message says to do works


def test_a_folder_nested_past_path_max_is_recorded_and_the_rest_imports(ws: Workspace, catalog: Catalog,
                                                                         tmp_path: Path, demo_dir: Path):
    top = tmp_path / "deep"
    top.mkdir()
    shutil.copy(demo_dir / "biden.jpg", top / "shallow.jpg")
    fd = os.open(top, os.O_RDONLY)
    for _ in range(25):  # 25 x 200 bytes: past Linux's 4096-byte PATH_MAX, made relative to each folder's fd
        os.mkdir("d" * 200, dir_fd=fd)
        inner = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(fd)
    summary = import_paths(ws, catalog, [top])
    assert summary.new == 1 and summary.failed_by_reason == {"unreadable": 1}
    assert "File name too long" in summary.failed[0].error
    named = import_paths(ws, catalog, [tmp_path / ("x" * 300), tmp_path / ("y" * 300) / "z.jpg"])  # as arguments
    assert named.failed_by_reason == {"unreadable": 2}


def test_jpeg_aliases_import_and_photos_in_other_formats_are_recorded_not_ignored(ws: Workspace, catalog: Catalog,
                                                                                   tmp_path: Path, demo_dir: Path):
    folder = tmp_path / "phone"
    folder.mkdir()
    shutil.copy(demo_dir / "obama.jpg", folder / "saved_by_a_browser.jfif")
    (folder / "IMG_0001.HEIC").write_bytes(b"\0\0\0\x18ftypheic" + bytes(64))
    (folder / "notes.txt").write_text("not a photo")
    summary = import_paths(ws, catalog, [folder])
    assert summary.new == 1 and summary.found == 2
    assert summary.failed_by_reason == {"unsupported_format": 1} and "convert it" in summary.failed[0].error


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


# --- issue 13: only regular files are read; everything else is recorded and the rest of the folder imports ----


def _import_in_thread(ws: Workspace, catalog_path: Path, paths: list[Path], fifos: list[Path]):
    """Run an import that must finish: if it blocks (a FIFO opened for reading waits for a writer forever), the
    FIFOs are opened for writing to release it, and the test fails instead of hanging the suite."""
    result: dict[str, object] = {}

    def work() -> None:
        cat = Catalog.open(catalog_path)
        try:
            result["summary"] = import_paths(ws, cat, paths)
        except BaseException as exc:  # reported by the assertion below
            result["error"] = exc
        finally:
            cat.close()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():
        for fifo in fifos:
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        pytest.fail("import hung on a special file (it must never open one)")
    assert "error" not in result, result.get("error")
    summary = result["summary"]
    assert isinstance(summary, ImportSummary)
    return summary


def _failed_rows(catalog: Catalog) -> dict[str, str]:
    rows = catalog.conn.execute("SELECT location, error FROM sources WHERE status='failed'").fetchall()
    return {Path(r["location"]).name: r["error"] for r in rows}


def test_special_files_and_bad_links_are_recorded_and_the_rest_imports(ws: Workspace, catalog: Catalog,
                                                                        tmp_path: Path, demo_dir: Path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(demo_dir / "obama.jpg", folder / "good.jpg")
    os.mkfifo(folder / "pipe.jpg")
    os.symlink("loop_b.jpg", folder / "loop_a.jpg")
    os.symlink("loop_a.jpg", folder / "loop_b.jpg")
    os.symlink("/dev/zero", folder / "zero_link.jpg")
    os.symlink("gone.jpg", folder / "dangling.jpg")
    os.symlink("good.jpg", folder / "link_to_good.jpg")  # a link to a regular file is followed
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "sock.jpg"))
    try:
        summary = _import_in_thread(ws, ws.catalog_path, [folder], [folder / "pipe.jpg"])
    finally:
        sock.close()
    expected = {"pipe.jpg": "not_a_file", "loop_a.jpg": "symlink_loop", "loop_b.jpg": "symlink_loop",
                "zero_link.jpg": "not_a_file", "dangling.jpg": "broken_link", "sock.jpg": "not_a_file"}
    assert summary.new == 1 and summary.duplicate == 1
    assert summary.found == 8
    assert {Path(f.item).name: f for f in summary.failed}.keys() == expected.keys()
    assert summary.failed_by_reason == dict(Counter(expected.values()))
    assert _failed_rows(catalog) == expected  # recorded under the link's own name, not /dev/zero
    messages = {Path(f.item).name: f.error for f in summary.failed}
    assert "FIFO" in messages["pipe.jpg"] and "character device" in messages["zero_link.jpg"]
    assert "socket" in messages["sock.jpg"] and "loop" in messages["loop_a.jpg"]
    assert "gone.jpg" in messages["dangling.jpg"]
    for f in summary.failed:
        assert f.item in f.error  # the message names the entry


def test_a_path_argument_that_loops_or_names_a_device_is_recorded(ws: Workspace, catalog: Catalog, tmp_path: Path):
    loop = tmp_path / "self.jpg"
    os.symlink("self.jpg", loop)
    summary = import_paths(ws, catalog, [loop, Path("/dev/null")])
    assert {Path(f.item).name for f in summary.failed} == {"self.jpg", "null"}
    assert _failed_rows(catalog) == {"self.jpg": "symlink_loop", "null": "not_a_file"}


def test_a_file_replaced_by_a_fifo_after_import_is_not_opened(ws: Workspace, catalog: Catalog, tmp_path: Path,
                                                              demo_dir: Path):
    path = tmp_path / "photo.jpg"
    shutil.copy(demo_dir / "obama.jpg", path)
    assert import_paths(ws, catalog, [tmp_path]).new == 1
    path.unlink()
    os.mkfifo(path)
    again = _import_in_thread(ws, ws.catalog_path, [tmp_path], [path])
    assert again.unchanged == 0 and [Path(f.item).name for f in again.failed] == ["photo.jpg"]
    assert _failed_rows(catalog) == {"photo.jpg": "not_a_file"}


def test_reads_stop_at_max_bytes_whatever_stat_says(tmp_path: Path):
    with pytest.raises(ImageError) as err:
        media.read_limited(Path("/dev/zero"), 1024)
    assert err.value.reason == "not_a_file"
    sparse = tmp_path / "huge.jpg"
    with open(sparse, "wb") as fh:
        fh.truncate(10**12)  # a terabyte on paper, nothing on disk: refused from its size, never read
    with pytest.raises(ImageError) as err:
        media.read_limited(sparse, 64 * 1024 * 1024)
    assert err.value.reason == "too_large" and "max_bytes" in str(err.value)
    proc = Path("/proc/self/status")  # a regular file whose stat size (0) understates its content
    if proc.exists():
        assert proc.stat().st_size == 0
        with pytest.raises(ImageError) as err:
            media.read_limited(proc, 16)
        assert err.value.reason == "too_large"
        assert len(media.read_limited(proc, 1 << 20)) > 16


def test_unreadable_folder_and_file_are_recorded(ws: Workspace, catalog: Catalog, tmp_path: Path, demo_dir: Path):
    probe = tmp_path / "probe"
    probe.write_bytes(b"x")
    probe.chmod(0)
    if os.access(probe, os.R_OK):  # root, or CAP_DAC_OVERRIDE: permission bits do not stop reads
        pytest.skip(f"running as uid {os.geteuid()} with permission checks bypassed (root): nothing can be made "
                    f"unreadable here; run as an ordinary user to exercise this case")
    folder = tmp_path / "photos"
    (folder / "locked").mkdir(parents=True)
    shutil.copy(demo_dir / "obama.jpg", folder / "good.jpg")
    shutil.copy(demo_dir / "biden.jpg", folder / "locked" / "inside.jpg")
    shutil.copy(demo_dir / "astronaut.jpg", folder / "secret.jpg")
    (folder / "secret.jpg").chmod(0)
    (folder / "locked").chmod(0)
    try:
        summary = import_paths(ws, catalog, [folder])
    finally:
        (folder / "locked").chmod(0o755)
        (folder / "secret.jpg").chmod(0o644)
    assert summary.new == 1
    assert _failed_rows(catalog) == {"locked": "unreadable", "secret.jpg": "unreadable"}
    assert any("permission denied" in f.error and "locked" in f.item for f in summary.failed)
