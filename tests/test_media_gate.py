"""The one gate for untrusted bytes (issue 13, must-have 1): sniffed allow-list, no foreign plugin, any decoder
failure an ImageError, and a seeded fuzz run over mutated real images and other formats' headers."""

from __future__ import annotations

import dataclasses
import functools
import io
import struct
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image, UnidentifiedImageError

from facecurate import media
from facecurate.catalog import Catalog, DownloadRow
from facecurate.crawl.download import Downloader
from facecurate.crawl.http import Http, HttpSettings
from facecurate.dedup.decode import decode_reduced
from facecurate.dedup.hashing import jpeg_quality
from facecurate.errors import ImageError
from facecurate.ingest import import_paths
from facecurate.storage import store
from facecurate.workspace import Config, Workspace, default_config, options_from
from tests.fakeweb import LoopbackServer, Reply

FUZZ_SEED = 1313
FUZZ_CASES = 5000
FUZZ_MAX_PIXELS = 4_000_000  # a mutated header may claim any size; past this it is refused before decoding


def _save(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _small_photo(demo_dir: Path) -> Image.Image:
    with Image.open(demo_dir / "obama.jpg") as im:
        return im.convert("RGB").resize((64, 80))


@functools.cache
def allowed_samples(demo_dir: Path) -> dict[str, bytes]:
    """Real pixels in every allowed format and the variants decoders branch on."""
    rgb = _small_photo(demo_dir)
    second = Image.new("RGB", rgb.size, (0, 0, 255))
    return {
        "baseline.jpg": _save(rgb, "JPEG", quality=85),
        "progressive.jpg": _save(rgb, "JPEG", quality=85, progressive=True),
        "gray.jpg": _save(rgb.convert("L"), "JPEG"),
        "cmyk.jpg": _save(rgb.convert("CMYK"), "JPEG"),
        "rgb.png": _save(rgb, "PNG"),
        "palette.png": _save(rgb.convert("P"), "PNG"),
        "sixteen.png": _save(Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257), "PNG"),
        "rgba.png": _save(rgb.convert("RGBA"), "PNG"),
        "lossy.webp": _save(rgb, "WEBP", quality=80),
        "lossless.webp": _save(rgb, "WEBP", lossless=True),
        "animated.gif": _save(rgb.convert("P"), "GIF", save_all=True, append_images=[second.convert("P")]),
        "plain.bmp": _save(rgb, "BMP"),
        "palette.bmp": _save(rgb.convert("P"), "BMP"),
        "raw.tif": _save(rgb, "TIFF"),
        "lzw.tif": _save(rgb, "TIFF", compression="tiff_lzw"),
        "deflate.tif": _save(rgb, "TIFF", compression="tiff_adobe_deflate"),
        "jpeg.tif": _save(rgb, "TIFF", compression="jpeg"),
    }


def _psd_header() -> bytes:
    """A Photoshop file header and empty sections (Pillow cannot write PSD)."""
    return b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 80, 64, 8, 3) + struct.pack(">III", 0, 0, 0) + b"\0\0" + \
        bytes(64 * 80 * 3)


def _dds_header_only() -> bytes:
    """The issue's reproduction: a 128-byte DDS header (plus padding to 192 bytes) and no pixel data."""
    header = struct.pack("<4sIIIIIII44x", b"DDS ", 124, 0x1007, 256, 256, 0, 0, 0)
    pixel_format = struct.pack("<II4s20x", 32, 0x4, b"DX10")
    return (header + pixel_format + bytes(20) + struct.pack("<IIIII", 98, 3, 0, 1, 0)).ljust(192, b"\0")


@functools.cache
def foreign_samples(demo_dir: Path) -> dict[str, bytes]:
    """Other formats Pillow knows (it can still write them: only its readers are unregistered)."""
    rgb = _small_photo(demo_dir)
    out = {"psd": _psd_header(), "dds_header": _dds_header_only()}
    for fmt, mode in (("PPM", "RGB"), ("ICO", "RGB"), ("TGA", "RGB"), ("PCX", "RGB"), ("SGI", "RGB"),
                      ("IM", "RGB"), ("DDS", "RGB"), ("SPIDER", "F"), ("EPS", "RGB"), ("QOI", "RGB"),
                      ("MSP", "1"), ("ICNS", "RGB"), ("BLP", "P"), ("PDF", "RGB"), ("XBM", "1"), ("PALM", "1"),
                      ("JPEG2000", "RGB")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # IM's writer: deprecated, still a reader to refuse
                out[fmt.lower()] = _save(rgb.convert(mode), fmt)
        except (OSError, KeyError, ValueError):
            continue  # a writer this Pillow build lacks; the others still cover the readers
    return out


# --- the registry and the allow-list -------------------------------------------------------------------------


def test_only_allowed_readers_are_registered():
    assert set(Image.OPEN) <= set(media.ALLOWED_FORMATS)
    assert {"JPEG", "PNG", "GIF", "BMP", "TIFF"} <= set(Image.OPEN)
    assert set(Image.ID) == set(Image.OPEN)
    assert not Image.init()  # already initialised: a later call cannot re-register what was removed


def test_eps_never_reaches_ghostscript(monkeypatch: pytest.MonkeyPatch, demo_dir: Path):
    calls: list[object] = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: calls.append(a))
    eps = foreign_samples(demo_dir)["eps"]
    with pytest.raises(ImageError) as err:
        media.decode(eps, "photo.jpg", 10**8)
    assert err.value.reason == "unsupported_format" and "EPS" in str(err.value) and "photo.jpg" in str(err.value)
    with pytest.raises(UnidentifiedImageError):  # Pillow itself, anywhere in the process, cannot open it
        Image.open(io.BytesIO(eps)).load()
    assert calls == []


@pytest.mark.parametrize("name", ["dds_header", "dds", "psd", "ppm", "ico", "sgi", "qoi", "pcx", "eps", "icns"])
def test_foreign_formats_are_refused_by_name(demo_dir: Path, name: str):
    data = foreign_samples(demo_dir).get(name)
    if data is None:
        pytest.skip(f"this Pillow cannot write {name}")
    with pytest.raises(ImageError) as err:
        media.decode(data, f"{name}.jpg", 10**8)
    assert err.value.reason == "unsupported_format", str(err.value)
    assert f"{name}.jpg" in str(err.value) and "jpg, png, webp, bmp, tiff, gif" in str(err.value)


@pytest.mark.parametrize("name", ["tga", "im", "spider", "palm"])
def test_formats_without_magic_are_not_images(demo_dir: Path, name: str):
    data = foreign_samples(demo_dir).get(name)
    if data is None:
        pytest.skip(f"this Pillow cannot write {name}")
    with pytest.raises(ImageError) as err:
        media.decode(data, f"{name}.jpg", 10**8)
    assert err.value.reason in ("unsupported_format", "not_an_image")


def test_a_tiff_variant_pillow_cannot_open_is_named_without_a_memory_address():
    import cv2

    ok, buf = cv2.imencode(".tiff", np.full((48, 64, 3), 0.5, np.float32))  # 3-channel float: Pillow has no mode
    assert ok and buf.tobytes()[:4] == b"II*\0"
    with pytest.raises(ImageError) as err:
        media.decode(buf.tobytes(), "float.tif", 10**8)
    assert err.value.reason == "corrupt" and "0x" not in str(err.value) and "float.tif" in str(err.value)


def test_every_allowed_kind_decodes_and_gif_gives_its_first_frame(demo_dir: Path):
    for name, data in allowed_samples(demo_dir).items():
        decoded = media.decode(data, name, 10**8)
        assert decoded.pixels.shape == (80, 64, 3) and decoded.pixels.dtype == np.uint8, name
        assert decoded.format in media.FORMAT_EXT and media.sniff(data) is not None, name
    first = media.decode(allowed_samples(demo_dir)["animated.gif"], "a.gif", 10**8).pixels
    assert first[..., 2].mean() < 200  # the photo, not the all-blue second frame


def test_allowed_magic_on_a_broken_body_is_corrupt_not_a_crash():
    # Each body makes a different Pillow code path raise a different exception type (struct.error, ValueError,
    # SyntaxError, OSError, ...): all must come out as the file's failure.
    bodies = [b"BM" + bytes(60), b"II*\0" + b"\xff" * 60, b"MM\0*" + bytes(8), b"GIF89a\xff\xff\xff\xff" + bytes(40),
              b"RIFF\x10\0\0\0WEBPVP8 " + bytes(20), b"\x89PNG\r\n\x1a\n" + bytes(40), b"\xff\xd8\xff\xe0" + bytes(30)]
    for body in bodies:
        with pytest.raises(ImageError) as err:
            media.decode(body, "x", 10**8)
        assert err.value.reason in ("corrupt", "truncated", "too_large"), (body[:8], err.value.reason)


def test_store_accepts_only_gated_formats(ws: Workspace, catalog: Catalog):
    with catalog.transaction(), pytest.raises(ImageError) as err:
        store(ws, catalog, b"P6 1 1 255 abc", "a" * 64, "PPM", "ppm", 1, 1, None)
    assert err.value.reason == "unsupported_format"
    assert catalog.image_count() == 0 and not list(ws.raw_dir.rglob("*.ppm"))


# --- the fuzz run ---------------------------------------------------------------------------------------------


def _mutate(data: bytes, rng: np.random.Generator, allowed_heads: list[bytes]) -> bytes:
    buf = bytearray(data)
    kind = int(rng.integers(0, 7))
    if kind == 0:  # flip a few bits, biased towards the header where parsers decide sizes and offsets
        for _ in range(int(rng.integers(1, 9))):
            at = int(rng.integers(0, min(len(buf), 256) if rng.random() < 0.7 else len(buf)))
            buf[at] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:  # overwrite a span with random bytes
        at = int(rng.integers(0, len(buf)))
        span = int(rng.integers(1, 32))
        buf[at:at + span] = rng.integers(0, 256, span, dtype=np.uint8).tobytes()
    elif kind == 2:  # truncate
        del buf[int(rng.integers(1, len(buf))):]
    elif kind == 3:  # insert random bytes
        at = int(rng.integers(0, len(buf)))
        buf[at:at] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    elif kind == 4:  # extreme values in a 2- or 4-byte field (sizes, counts, offsets)
        at = int(rng.integers(0, min(len(buf), 128)))
        width = 2 if rng.random() < 0.5 else 4
        buf[at:at + width] = bytes([0xFF if rng.random() < 0.5 else 0x00]) * width
    elif kind == 5:  # an allowed signature in front of another body (a foreign file renamed and patched)
        head = allowed_heads[int(rng.integers(0, len(allowed_heads)))]
        buf[:len(head)] = head
    else:  # duplicate a chunk (repeated headers, markers, IFDs)
        at = int(rng.integers(0, len(buf)))
        buf[at:at] = buf[at:at + int(rng.integers(1, 200))]
    return bytes(buf)


def _reduced_copy(data: bytes, name: str, max_pixels: int) -> media.Decoded:
    """crop's detection copy: a reduced decode (JPEG draft, box reduction, area resize)."""
    return media.decode(data, name, max_pixels, max_side=16)


def test_fuzz_decode_raises_nothing_but_image_error(demo_dir: Path):
    allowed, foreign = allowed_samples(demo_dir), foreign_samples(demo_dir)
    heads = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\0", b"MM\0*", b"RIFF\0\0\0\0WEBPVP8 "]
    corpus = [(name, data, True) for name, data in allowed.items()] + \
        [(name, data, False) for name, data in foreign.items()]
    rng = np.random.default_rng(FUZZ_SEED)
    outcomes: Counter[str] = Counter()
    began = time.perf_counter()
    for case in range(FUZZ_CASES):
        name, base, _ = corpus[case % len(corpus)]
        data = _mutate(base, rng, heads) if case >= len(corpus) else base
        label = f"case {case} ({name}, seed {FUZZ_SEED})"
        assert 1 <= jpeg_quality(data) <= 100, label  # dedup reads JPEG tables without a decoder: no IndexError
        verdicts = {}
        for decoder in (media.decode, media.probe, _reduced_copy, decode_reduced):
            try:
                decoded = decoder(data, label, FUZZ_MAX_PIXELS)
            except ImageError as exc:
                outcomes[exc.reason] += 1
                verdicts[decoder] = None
                assert label in str(exc)
            except BaseException as exc:  # anything else escaping is the bug this test exists for
                pytest.fail(f"{label}: {type(exc).__name__}: {exc} escaped the gate; bytes[:32]={data[:32]!r}")
            else:
                outcomes["ok"] += 1
                assert media.sniff(data) is not None, f"{label}: decoded bytes that sniff outside the allow-list"
                if isinstance(decoded, (media.Decoded, media.Probe)):
                    assert decoded.format in media.FORMAT_EXT
                    verdicts[decoder] = (decoded.width, decoded.height) if isinstance(decoded, media.Probe) \
                        else decoded.source_size
        # What download and import accept (probe) is what crop can decode, reduced or not, at the same size.
        assert verdicts[media.probe] == verdicts[media.decode] == verdicts[_reduced_copy], label
        outcomes["agreed"] += 1
    elapsed = time.perf_counter() - began
    print(f"fuzz: {FUZZ_CASES} cases x 4 decoders, seed {FUZZ_SEED}, {elapsed:.1f}s, {dict(outcomes)}")
    # Not vacuous: mutants both decode and fail, for several different reasons.
    assert outcomes["ok"] > FUZZ_CASES // 10
    assert {"corrupt", "unsupported_format"} <= set(outcomes) and len(outcomes) >= 4


# --- one gate for both ways in ----------------------------------------------------------------------------------


def test_downloads_and_imports_meet_the_same_gate(ws: Workspace, catalog: Catalog, tmp_path: Path, demo_dir: Path):
    """The same hostile bytes served by a loopback image host and lying in a folder get the same verdict: the
    issue's 192-byte DDS header stopped the crawl for good; now it is one recorded failure among good images."""
    bodies = {"dds.jpg": _dds_header_only(), "eps.jpg": foreign_samples(demo_dir)["eps"],
              "good.jpg": allowed_samples(demo_dir)["baseline.jpg"]}
    server = LoopbackServer(lambda req: Reply(body=bodies[req.path.strip("/")],
                                              headers={"Content-Type": "image/jpeg"}))
    # The image host is on loopback: allowed explicitly where the crawler has a network policy (issue 13 #4).
    loopback = {"allow_private": True} if "allow_private" in {f.name for f in dataclasses.fields(HttpSettings)} else {}
    settings = options_from(HttpSettings, Config(default_config()), "crawl", contact="t@example.org",
                            per_host_rate=1000.0, retries=0, **loopback)
    with server:
        downloader = Downloader(Http(settings), 10**8, 32, workers=1)
        fetched = {name: downloader.fetch(DownloadRow(url_id=i, url=server.url(f"/{name}"), rank=i, page_url=None,
                                                      title=None, license=None, author=None, engine="bing",
                                                      query="q", label=None))
                   for i, name in enumerate(bodies)}
    folder = tmp_path / "same"
    folder.mkdir()
    for name, data in bodies.items():
        (folder / name).write_bytes(data)
    imported = import_paths(ws, catalog, [folder])
    by_import = {Path(r["location"]).name: r["error"]
                 for r in catalog.conn.execute("SELECT location, error FROM sources WHERE status='failed'")}
    by_download = {name: d.reason for name, d in fetched.items() if not d.ok}
    assert by_download == by_import == {"dds.jpg": "unsupported_format", "eps.jpg": "unsupported_format"}
    assert fetched["good.jpg"].ok and imported.new == 1


def test_an_allowed_format_this_pillow_cannot_read_is_unsupported(monkeypatch: pytest.MonkeyPatch, demo_dir: Path):
    monkeypatch.delitem(Image.OPEN, "WEBP", raising=False)  # a Pillow built without libwebp
    with pytest.raises(ImageError) as err:
        media.decode(allowed_samples(demo_dir)["lossy.webp"], "photo.webp", 10**8)
    assert err.value.reason == "unsupported_format" and "photo.webp" in str(err.value) and "WEBP" in str(err.value)


@pytest.mark.parametrize("separate_tmp", [False, True])
def test_atomic_write_makes_missing_folders_and_leaves_no_part_file(tmp_path: Path, separate_tmp: bool) -> None:
    """Folders are made only when the first attempt misses them: a new shard folder, and a target folder
    missing beside a temp folder that exists, must both end with the whole file and no temp file left."""
    target = tmp_path / "crops" / "ab" / "cd" / "face.jpg"
    tmp_dir = tmp_path / "staging" / "deep" if separate_tmp else None
    media.atomic_write(target, b"first", tmp_dir)
    media.atomic_write(target, b"second", tmp_dir)  # the folders exist now: the fast path
    assert target.read_bytes() == b"second"
    assert list(tmp_path.rglob(f"{media.PART_PREFIX}*")) == []
