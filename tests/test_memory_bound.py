"""Issue 13, must-have 2: decoding is budgeted in pixels, large images are decoded reduced, and crop detects on
a reduced copy but cuts from the original, so no stage's memory grows with the size or number of images."""

from __future__ import annotations

import io
import itertools
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecurate import media
from facecurate.catalog import Catalog
from facecurate.errors import ImageError
from facecurate.faces.crop import CropOptions, run_crop
from facecurate.ingest import import_paths
from facecurate.workspace import Workspace, init_workspace


def _jpeg(pixels: np.ndarray, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=92, **kw)
    return buf.getvalue()


def _photo(demo_dir: Path, side: int) -> np.ndarray:
    """A real face photo enlarged to ``side`` px on its long side (a big camera photo's stand-in)."""
    with Image.open(demo_dir / "obama.jpg") as im:
        im = im.convert("RGB")
        f = side / max(im.size)
        return np.asarray(im.resize((round(im.width * f), round(im.height * f)), Image.Resampling.LANCZOS))


def gray_png_bomb(side: int, index: int = 0) -> bytes:
    """An all-zero 8-bit grayscale PNG, side x side: tiny on disk, side² bytes once decoded."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    z = zlib.compressobj(9)
    body = [z.compress(b"\0" + bytes([index]) + bytes(side - 1))]
    body += [z.compress(bytes(side + 1)) for _ in range(side - 1)] + [z.flush()]
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(body)) + chunk(b"IEND", b"")


# -- the budget itself -------------------------------------------------------------------------------------


def test_threads_never_hold_more_than_the_budget_and_an_oversized_image_runs_alone() -> None:
    budget = media.PixelBudget(1.0)  # 1,000,000 pixels
    lock, held, peak, alone = threading.Lock(), [0], [0], []
    sizes = [300_000, 450_000, 200_000, 700_000, 5_000_000, 100_000] * 4

    def work(n: int) -> None:
        with budget.hold(n):
            with lock:
                held[0] += min(n, budget.capacity)
                peak[0] = max(peak[0], held[0])
                if n > budget.capacity:
                    alone.append(held[0] == budget.capacity)
            time.sleep(0.005)
            with lock:
                held[0] -= min(n, budget.capacity)

    threads = [threading.Thread(target=work, args=(n,)) for n in sizes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert 0 < peak[0] <= budget.capacity
    assert alone and all(alone)  # a 5 MP image went through, with nothing else held beside it
    assert budget.held == 0


@pytest.mark.skipif(sys.platform != "linux", reason="the shared budget rides on fork")
def test_forked_workers_share_one_budget(tmp_path: Path) -> None:
    """Two processes each wanting 60% of the budget take turns: their holding intervals never overlap."""
    budget = media.PixelBudget(1.0, processes=True)
    log = tmp_path / "log"

    pids = []
    for k in range(2):
        pid = os.fork()
        if pid == 0:  # child
            try:
                for _ in range(5):
                    with budget.hold(600_000):
                        start = time.monotonic()
                        time.sleep(0.01)
                        with open(log, "a") as fh:
                            fh.write(f"{k} {start} {time.monotonic()}\n")
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    spans = sorted(tuple(map(float, line.split()[1:])) for line in log.read_text().splitlines())
    assert len(spans) == 10
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_a_decode_waits_for_room_in_the_budget() -> None:
    data = _jpeg(np.full((400, 500, 3), 90, np.uint8))
    budget = media.PixelBudget(0.2)  # 200,000 pixels = the whole image
    result: list[media.Decoded] = []
    with budget.hold(budget.capacity):  # someone else holds everything
        t = threading.Thread(target=lambda: result.append(media.decode(data, "x.jpg", 10**8, budget=budget)))
        t.start()
        t.join(0.5)
        assert t.is_alive() and not result  # waiting, not decoding
    t.join(10)
    assert result and result[0].pixels.shape == (400, 500, 3)
    assert budget.held == 0


# -- reduced decoding ------------------------------------------------------------------------------------------


def test_probe_validates_the_whole_stream_at_a_fraction_of_the_pixels(demo_dir: Path) -> None:
    data = _jpeg(_photo(demo_dir, 2400))
    got = media.probe(data, "big.jpg", 10**8)
    full = media.decode(data, "big.jpg", 10**8)
    assert (got.format, got.width, got.height) == ("JPEG", full.width, full.height)
    with pytest.raises(ImageError) as exc:  # the draft decode still reads to the last byte
        media.probe(data[: len(data) * 2 // 3], "cut.jpg", 10**8)
    assert exc.value.reason == "truncated"
    with pytest.raises(ImageError) as exc:
        media.probe(data, "big.jpg", 10**8, min_side=5000)
    assert exc.value.reason == "too_small"


def test_probe_reports_the_oriented_size_like_decode(demo_dir: Path) -> None:
    pixels = _photo(demo_dir, 600)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    data = _jpeg(pixels, exif=exif.tobytes())
    got, full = media.probe(data, "turned.jpg", 10**8), media.decode(data, "turned.jpg", 10**8)
    assert (got.width, got.height) == (full.width, full.height) == (pixels.shape[0], pixels.shape[1])


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_max_side_gives_a_faithful_reduced_copy(demo_dir: Path, fmt: str) -> None:
    pixels = _photo(demo_dir, 3000)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    small = media.decode(buf.getvalue(), "big", 10**8, max_side=1024)
    assert max(small.pixels.shape[:2]) == 1024 and small.reduced
    assert small.source_size == (pixels.shape[1], pixels.shape[0])
    reference = np.asarray(Image.fromarray(pixels).resize((small.width, small.height), Image.Resampling.BOX))
    assert np.abs(small.pixels.astype(int) - reference).mean() < 3.0
    same = media.decode(buf.getvalue(), "big", 10**8, max_side=4000)
    assert not same.reduced and same.pixels.shape == pixels.shape


@pytest.mark.parametrize("mode", ["L", "P", "PA", "RGBA", "LA", "CMYK", "I;16", "I", "F", "1", "RGB"])
def test_rgb_conversion_by_strips_equals_the_whole_image(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """Big images are converted a strip of rows at a time; the pixels are those of one whole conversion."""
    rng = np.random.default_rng(7)
    rgba = Image.fromarray(rng.integers(0, 256, (97, 61, 4), dtype=np.uint8), "RGBA")
    if mode in ("I;16", "I", "F"):
        im = Image.fromarray((rng.random((97, 61)) * (900 if mode == "F" else 60000)).astype(
            {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
        im = im if mode != "I;16" else im.convert("I;16")
    elif mode in ("P", "PA"):
        im = rgba.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=50)
        if mode == "PA":
            im.info["transparency"] = 3
    else:
        im = rgba.convert(mode)
    whole = media._to_rgb(im)
    monkeypatch.setattr(media, "STRIP_PIXELS", 61 * 10)  # ten rows a strip: ten strips
    assert np.array_equal(media._to_rgb(im), whole)
    assert whole.shape == (97, 61, 3) and whole.dtype == np.uint8


@pytest.mark.parametrize(("mode", "fmt"), [("P", "PNG"), ("1", "PNG"), ("I;16", "TIFF"), ("LA", "PNG"),
                                           ("CMYK", "TIFF"), ("RGBA", "PNG"), ("F", "TIFF")])
def test_a_reduced_copy_decodes_in_every_mode(mode: str, fmt: str) -> None:
    """Palette, 1-bit and 16-bit images cannot be box-reduced by Pillow: they still give a reduced copy."""
    rgb = Image.fromarray(np.random.default_rng(3).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    im = rgb.convert("L").convert("I;16") if mode == "I;16" else rgb.convert(mode)
    buf = io.BytesIO()
    im.save(buf, fmt)
    small = media.decode(buf.getvalue(), f"big.{fmt.lower()}", 10**8, max_side=100)
    assert small.pixels.shape == (75, 100, 3) and small.source_size == (400, 300)


# -- crop: detect on the copy, cut from the original ------------------------------------------------------


def _crop_ws(tmp_path: Path, name: str, photo: Path, **config: object) -> tuple[Workspace, list]:
    ws = init_workspace(tmp_path / name)
    if config:
        ws.config_path.write_text("[crop]\n" + "".join(f"{k} = {v}\n" for k, v in config.items()))
    with Catalog.open(ws.catalog_path) as catalog:
        import_paths(ws, catalog, [photo])
        summary = run_crop(ws, catalog, CropOptions.from_config(ws, device="cpu"))
        assert summary.with_face == 1, summary
        faces = catalog.faces_to_filter()
    return ws, faces


def test_crop_of_a_large_photo_is_cut_from_the_original(tmp_path: Path, demo_dir: Path) -> None:
    """A 3000 px photo: detection runs on a 1024 px copy, yet the landmarks are in the photo's pixels and the
    crop is as sharp as one aligned from the full decode (a crop cut from the copy would be enlarged 3x)."""
    pixels = _photo(demo_dir, 3000)
    photo = tmp_path / "big.jpg"
    photo.write_bytes(_jpeg(pixels))
    ws, (face,) = _crop_ws(tmp_path, "ws", photo, size=1024)

    from facenet_pytorch import MTCNN

    _boxes, _probs, points = MTCNN(device="cpu").detect(Image.fromarray(pixels), landmarks=True)
    eye_gap = float(np.hypot(*(points[0][1] - points[0][0])))
    assert np.abs(np.asarray(face.landmarks) - points[0]).max() < 0.05 * eye_gap  # the anchor, full size

    from facecurate.faces.align import align_face

    crop = np.asarray(Image.open(ws.resolve(face.crop_path)).convert("RGB"))
    from_original = align_face(pixels, np.asarray(face.landmarks), size=1024).crop
    assert np.abs(crop.astype(int) - from_original).mean() < 4.0  # JPEG round trip only

    def detail(img: np.ndarray) -> float:
        g = img.mean(axis=2)
        return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())

    small = media.decode(photo.read_bytes(), "big", 10**8, max_side=1024)
    sx = small.width / pixels.shape[1]
    from_copy = align_face(small.pixels, np.asarray(face.landmarks) * sx, size=1024).crop
    assert detail(crop) > 1.3 * detail(from_copy)


BOMBS = 3
BOMB_SIDE = 10_000


def _peak_mb(args: list[str], cwd: Path) -> float:
    """Peak RSS of ``facecurate args`` in its own process: its VmHWM, which it reports as it exits. (Not the
    rusage of the child: Linux counts in it the memory of this test process at the moment it forked.)"""
    report = cwd / "hwm"
    code = ("import atexit, runpy, sys\n"
            "def peak():\n"
            "    status = open('/proc/self/status').read()\n"
            f"    open({str(report)!r}, 'w').write(status.split('VmHWM:')[1].split()[0])\n"
            "atexit.register(peak)\n"
            "sys.argv = ['facecurate', *sys.argv[1:]]\n"
            "runpy.run_module('facecurate', run_name='__main__', alter_sys=True)\n")
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(report.read_text()) / 1024


@pytest.mark.timeout(600)
def test_100_megapixel_bombs_stay_under_1_5_gb_in_every_stage(tmp_path: Path) -> None:
    """Three distinct all-zero 10,000 x 10,000 PNGs (~100 KB each, 100 MP decoded): import, dedup and crop each
    stay under 1.5 GB peak RSS with the default budget (before the budget, crop alone reached 4.85 GB on
    four). Each stage runs in its own process (three files are one dedup chunk: fingerprinted in-process)."""
    folder = tmp_path / "bombs"
    folder.mkdir()
    for i in range(BOMBS):
        (folder / f"bomb{i}.png").write_bytes(gray_png_bomb(BOMB_SIDE, i))
    ws = init_workspace(tmp_path / "ws")
    for stage in (["import", str(folder)], ["dedup"], ["crop", "--device", "cpu"]):
        peak = _peak_mb([*stage, "-w", str(ws.root)], tmp_path)
        assert peak < 1536, f"{stage[0]}: {peak:.0f} MB"
    with Catalog.open(ws.catalog_path) as catalog:
        rows = catalog.images_to_crop(redo=True)
        assert len(rows) == BOMBS and all(r.width == BOMB_SIDE for r in rows)
        assert {r.crop_state for r in rows} == {"no_face"}  # decoded and searched, not failed
