"""dedup: exact and perceptual duplicates on real photos, mirror- and crop-aware, no chaining, quality keeper,
an exact sub-quadratic search, an incremental cache, dry runs that write nothing, faces after crop, export."""

from __future__ import annotations

import dataclasses
import io
import json
import random
import sqlite3
import tracemalloc
from pathlib import Path

import imagehash
import numpy as np
import pytest
import scipy.fftpack
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps
from typer.testing import CliRunner

from facecurate import catalog as catalog_mod
from facecurate.catalog import Catalog
from facecurate.catalog import migrations as migrations_mod
from facecurate.cli import app
from facecurate.dedup import DedupOptions, run_dedup
from facecurate.dedup import stage as dedup_stage
from facecurate.dedup.core import Items, Options, find_groups, twin_candidates
from facecurate.dedup.decode import decode_reduced, full_digest, is_exact
from facecurate.dedup.groups import FLIP, Edges, group_around_keepers, keeper_rank, parse_policy
from facecurate.dedup.hashing import (
    WINDOW_PLACES,
    base_array,
    fingerprint,
    fingerprint_gray,
    hash_to_int,
    jpeg_quality,
    lanczos_matrix,
    window_box,
)
from facecurate.dedup.search import brute_force, hamming, mih_plan, mih_search, plan_search, popcount64
from facecurate.dedup.verify import similarity, thumbs_from_bytes
from facecurate.errors import ConfigError, ImageError
from facecurate.events import Failure, Silent
from facecurate.export import export
from facecurate.faces.crop import CropOptions, run_crop
from facecurate.ingest import import_paths
from facecurate.rules.stage import run_filter
from facecurate.workspace import Config, Workspace, default_config, init_workspace, options_from, render_default_toml
from tests.conftest import DEMO_DATA, RecordingProgress, needs_dev

DEFAULTS = options_from(DedupOptions, Config(default_config()), "dedup")  # the settings table's values


def _options(**changes: object) -> Options:
    """Photo grouping options at the settings' defaults, with some changed."""
    return dataclasses.replace(DEFAULTS.photo_options(), **changes)


def _fingerprint(pixels: np.ndarray, window: float = DEFAULTS.crop_window):
    return fingerprint(pixels, DEFAULTS.algorithm, window)


def _fingerprint_gray(gray: np.ndarray, digest: str):
    return fingerprint_gray(gray, digest, DEFAULTS.algorithm, DEFAULTS.crop_window)


PEOPLE = ("obama", "obama2", "biden", "astronaut")        # one photo each, the near-duplicates are made from
OTHERS = ("obama3", "obama_partial_face", "rocket_no_face")  # further photos: never merged with the above


# -- real photos and the edits a crawl meets ------------------------------------------------------------------


def _small(name: str, side: int = 360) -> Image.Image:
    im = Image.open(DEMO_DATA / f"{name}.jpg").convert("RGB")
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    return im


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _watermark(im: Image.Image) -> Image.Image:
    out = im.copy()
    font = ImageFont.load_default(size=max(10, im.height // 14))
    ImageDraw.Draw(out).text((im.width * 0.05, im.height * 0.85), "© stockphoto.com", fill=(255, 255, 255),
                             font=font)
    return out


def _crop_centre(im: Image.Image, share: float = 0.05) -> Image.Image:
    dx, dy = im.width * share / 2, im.height * share / 2
    return im.crop((round(dx), round(dy), round(im.width - dx), round(im.height - dy)))


def _crop_corner(im: Image.Image, share: float = 0.05) -> Image.Image:
    return im.crop((0, 0, round(im.width * (1 - share)), round(im.height * (1 - share))))


EDITS = {
    "resize": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
    "jpeg30": lambda im: _jpeg(im, 30),
    "hflip": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "crop5": _crop_centre,
    "watermark": _watermark,
    "brighter15": lambda im: ImageEnhance.Brightness(im).enhance(1.15),
    "darker15": lambda im: ImageEnhance.Brightness(im).enhance(0.85),
    "hflip+jpeg30": lambda im: _jpeg(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 30),
}


def _items(images: list[Image.Image], quality: dict[str, list[float]] | None = None) -> tuple[Items, np.ndarray]:
    fps = [_fingerprint(np.asarray(im)) for im in images]
    n = len(fps)
    q = {k: np.zeros(n) for k in ("resolution", "jpeg_quality", "bytes", "sharpness")}
    q["resolution"] = np.array([im.width * im.height for im in images], dtype=float)
    q["first_seen"] = np.arange(n, dtype=float)
    q.update({k: np.asarray(v, dtype=float) for k, v in (quality or {}).items()})
    items = Items(hashes=np.array([f.hash for f in fps], dtype=np.uint64),
                  flips=np.array([f.hash_flip for f in fps], dtype=np.uint64),
                  pixels=np.array([f.pixels for f in fps]), quality=q,
                  tiebreak=np.array([f"{i:04d}" for i in range(n)]),
                  windows=np.array([f.windows for f in fps], dtype=np.uint64),
                  window_flips=np.array([f.window_flips for f in fps], dtype=np.uint64))
    return items, thumbs_from_bytes([f.thumb for f in fps])


def _groups(keeper: np.ndarray) -> set[frozenset[int]]:
    out: dict[int, set[int]] = {}
    for i, k in enumerate(keeper.tolist()):
        if k >= 0:
            out.setdefault(k, set()).add(i)
    return {frozenset(g) for g in out.values()}


@pytest.fixture(scope="module")
def edited_set() -> tuple[list[Image.Image], list[str], list[str]]:
    """The four people's photos with every edit, plus other photos (same person included) left as they are."""
    images, origin, edit = [], [], []
    for name in PEOPLE:
        base = _small(name)
        for label, fn in {"original": lambda im: im, **EDITS}.items():
            images.append(fn(base))
            origin.append(name)
            edit.append(label)
    for name in OTHERS:
        images.append(_small(name))
        origin.append(name)
        edit.append("original")
    return images, origin, edit


# -- pure pieces ------------------------------------------------------------------------------------------------


def test_popcount_and_hamming_agree_with_python():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2**63, 5000, dtype=np.int64).view(np.uint64) ^ np.uint64(1 << 63)
    assert popcount64(x).tolist() == [bin(int(v)).count("1") for v in x]
    assert hamming(-1, 0) == 64 and hamming(0b1011, 0b0001) == 2


def test_stored_hashes_are_phash_of_the_frame_and_windows_and_the_flip_is_the_mirror_hash():
    """imagehash's pHash rule (scipy DCT of the 32 px reduction, low 8x8 block > its median) on the frame and on
    each crop window of the base; within 2 bits of imagehash.phash itself, which rounds its reduction to 8 bits."""
    im = _small("obama2")
    fp = _fingerprint(np.asarray(im), window=0.95)
    base = base_array(np.asarray(im.convert("L")))

    def phash_of(box: tuple[float, float, float, float]) -> tuple[int, int]:
        rows, cols = lanczos_matrix(64, box[1], box[3], 32), lanczos_matrix(64, box[0], box[2], 32)
        out = []
        for small in (rows @ base @ cols.T, (rows @ base @ cols.T)[:, ::-1]):
            dct = scipy.fftpack.dct(scipy.fftpack.dct(small, axis=0), axis=1)[:8, :8]
            out.append(hash_to_int(imagehash.ImageHash(dct > np.median(dct))))
        return out[0], out[1]

    assert (fp.hash, fp.hash_flip) == phash_of((0, 0, 64, 64))
    windows = [phash_of(window_box(64, 0.95, p)) for p in WINDOW_PLACES]
    assert windows == list(zip(fp.windows, fp.window_flips, strict=True))
    assert len(set(fp.windows)) == len(WINDOW_PLACES)  # four different windows, not one repeated
    pil_base = Image.fromarray(np.rint(base).astype(np.uint8))
    assert hamming(fp.hash, hash_to_int(imagehash.phash(pil_base))) <= 2
    assert hamming(fp.hash, hash_to_int(imagehash.phash(im))) <= 4  # and it is pHash of the photo itself
    mirrored = _fingerprint(np.asarray(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    assert hamming(fp.hash, mirrored.hash) > 20          # why plain pHash misses mirrored copies
    assert hamming(fp.hash, mirrored.hash_flip) <= 2     # and why hashing the flip catches them
    assert _fingerprint(np.asarray(im), window=0).windows == ()


def test_jpeg_quality_is_read_from_the_quantisation_table():
    im = _small("biden")
    for q in (30, 75, 95):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=q)
        assert abs(jpeg_quality(buf.getvalue()) - q) <= 2
    png = io.BytesIO()
    im.save(png, "PNG")
    assert jpeg_quality(png.getvalue()) == 100


@pytest.mark.parametrize("threshold", [0, 3, 8, 10, 12])
def test_mih_search_equals_brute_force_on_random_hashes(threshold: int):
    rng = np.random.default_rng(threshold)
    base = rng.integers(0, 2**63, 1500, dtype=np.int64).view(np.uint64) * np.uint64(2) + np.uint64(1)
    near = base[:500].copy()  # planted near-duplicates at 0..14 bits
    for k in range(near.size):
        for b in rng.choice(64, size=int(rng.integers(0, 15)), replace=False):
            near[k] ^= np.uint64(1) << np.uint64(int(b))
    index = np.concatenate([base, near])
    queries = np.concatenate([base[::3], near[::2]])
    expected = brute_force(index, queries, threshold)
    assert len(expected) > queries.size  # the planted pairs are found, not only the self-matches
    for m in (3, 4, 5, 6):
        got = mih_search(index, queries, threshold, plan=mih_plan(m, threshold))
        assert np.array_equal(got.query, expected.query) and np.array_equal(got.index, expected.index)
        assert np.array_equal(got.distance, expected.distance)
    auto = mih_search(index, queries, threshold)
    assert np.array_equal(auto.index, expected.index)


def test_mih_survives_crowded_buckets():
    """Hundreds of hashes sharing a chunk (blank images do that) must not be truncated by the bucket walk."""
    rng = np.random.default_rng(5)
    low = rng.integers(0, 2**40, 700, dtype=np.int64).view(np.uint64)
    index = np.concatenate([low, low[:300] ^ np.uint64(0b101)])  # high 24 bits all zero: one crowded bucket
    expected = brute_force(index, index, 6)
    got = mih_search(index, index, 6, plan=mih_plan(3, 6))
    assert np.array_equal(got.index, expected.index) and np.array_equal(got.query, expected.query)


def test_search_plan_is_sub_quadratic_at_scale_and_memory_stays_small():
    plan = plan_search(1_000_000, 1_000_000, 8)
    assert not plan.brute and len(plan.widths) == 3
    assert plan.passes < 1000  # ~700 probes per query instead of a million comparisons
    rng = np.random.default_rng(3)
    hashes = rng.integers(0, 2**63, 100_000, dtype=np.int64).view(np.uint64)
    tracemalloc.start()
    found = mih_search(hashes, hashes, 8, plan=mih_plan(3, 8))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(found) >= hashes.size
    assert peak < 150 * 2**20  # an N x N matrix of 100k would need 10 GB


def test_grouping_does_not_chain():
    """A~B (6 bits) and B~C (6 bits) but A and C are 12 apart: C joins A's group only if A is not the keeper."""
    a = 0
    b = a ^ 0b111111
    c = b ^ (0b111111 << 20)
    hashes = np.array([a, b, c], dtype=np.uint64)
    far = ~hashes  # mirror hashes far from everything
    assert hamming(a, c) == 12

    def run(resolution: list[float]) -> tuple[np.ndarray, np.ndarray]:
        items = Items(hashes=hashes, flips=far, pixels=np.array(["a", "b", "c"]),
                      quality={"resolution": np.array(resolution)}, tiebreak=np.array(["a", "b", "c"]))
        result = find_groups(items, _options(threshold=8, min_similarity=0.0, policy=("resolution",)),
                             thumbs=lambda idx: pytest.fail("verification is off"))
        return result.keeper, result.distance

    keeper, distance = run([3, 2, 1])   # A best: A claims B; C is 12 bits from A and stays alone
    assert keeper.tolist() == [0, 0, -1] and distance.tolist()[:2] == [0, 6]
    keeper, distance = run([2, 3, 1])   # B best: both A and C are within 6 bits of B
    assert keeper.tolist() == [1, 1, 1] and distance.tolist() == [6, 0, 6]


def test_group_around_keepers_members_are_within_threshold_of_their_keeper():
    rng = np.random.default_rng(7)
    n = 400
    hashes = rng.integers(0, 2**63, n, dtype=np.int64).view(np.uint64)
    hashes[200:] = hashes[:200] ^ np.uint64(0b1111)  # pairs 4 bits apart...
    hashes[300:] ^= np.uint64(0b1111 << 30)           # ...and some chained 4 more bits from their twin
    from facecurate.dedup.groups import candidate_edges

    edges = candidate_edges(hashes, ~hashes, 6)
    rank = keeper_rank({"first_seen": np.arange(n)}, ("first_seen",), np.arange(n))
    grouping = group_around_keepers(n, edges, rank)
    for m in grouping.members():
        assert hamming(int(hashes[m]), int(hashes[grouping.keeper[m]])) == grouping.distance[m] <= 6


def test_keeper_rank_follows_the_policy_then_the_tiebreak():
    q = {"resolution": np.array([100, 400, 400, 400]), "jpeg_quality": np.array([95, 30, 90, 90]),
         "bytes": np.array([9, 9, 5, 7]), "sharpness": np.array([1, 1, 1, 1]), "first_seen": np.arange(4)}
    rank = keeper_rank(q, parse_policy("resolution,jpeg_quality,bytes,sharpness"), np.array(["d", "c", "b", "a"]))
    assert np.argsort(rank).tolist() == [3, 2, 1, 0]
    assert np.argsort(keeper_rank(q, ("first_seen",), np.array(["d", "c", "b", "a"]))).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="keeper policy"):
        parse_policy("resolution,size")


def test_verification_separates_copies_from_different_faces():
    originals = [_small(n) for n in PEOPLE]
    copies = [_crop_corner(EDITS["jpeg30"](im)) for im in originals]
    fa = thumbs_from_bytes([_fingerprint(np.asarray(im)).thumb for im in originals])
    fb = thumbs_from_bytes([_fingerprint(np.asarray(im)).thumb for im in copies])
    same = similarity(fa, fb)
    other = similarity(fa, np.roll(fb, 1, axis=0))
    assert same.min() >= 0.95 and other.max() < 0.9


# -- near-duplicates on real photos --------------------------------------------------------------------------


def test_every_edit_is_caught_and_different_photos_are_not_merged(edited_set):
    images, origin, edit = edited_set
    items, thumbs = _items(images)
    result = find_groups(items, _options(), thumbs=lambda idx: thumbs[idx])
    expected = {frozenset(i for i, o in enumerate(origin) if o == name) for name in PEOPLE}
    assert _groups(result.keeper) == expected  # obama, obama2 and obama3 (one person, three photos) stay apart
    flips = [i for i, e in enumerate(edit) if e.startswith("hflip")]
    assert {int(result.transform[i]) for i in flips} == {FLIP}
    assert all(result.distance[i] <= 8 for i in range(len(images)) if result.keeper[i] >= 0)


def test_off_centre_crop_and_mirror_crop_are_caught_by_the_window(edited_set):
    images, origin, _ = edited_set
    extra = [_crop_centre(_small("obama").transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
             _crop_corner(_small("biden"), 0.03)]
    items, thumbs = _items(images + extra)
    result = find_groups(items, _options(), thumbs=lambda idx: thumbs[idx])
    n = len(images)
    obama, biden = origin.index("obama"), origin.index("biden")
    assert result.keeper[n] == result.keeper[obama] >= 0
    assert result.keeper[n + 1] == result.keeper[biden] >= 0


def test_hash_alone_would_merge_different_faces_verification_does_not():
    """Without verification, a loose threshold merges different aligned faces: the thumbnail check is why
    precision holds."""
    faces = [_small(n, 200) for n in ("obama", "obama2", "obama3", "biden", "astronaut")]
    items, thumbs = _items(faces)
    loose = find_groups(items, _options(threshold=26, min_similarity=0.0), thumbs=lambda idx: thumbs[idx])
    checked = find_groups(items, _options(threshold=26), thumbs=lambda idx: thumbs[idx])
    assert loose.stats["duplicates"] > 0
    assert checked.stats["duplicates"] == 0 and checked.stats["rejected_by_verify"] == loose.stats["candidates"]


def test_dev_near_duplicate_pairs_are_caught():
    root = needs_dev("near_duplicates")
    pairs = [sorted(p.iterdir()) for p in sorted(root.iterdir()) if p.is_dir()]
    face_pairs = [p for p in pairs if "face" in p[0].name]  # pair_08 holds two colourways of one product shot
    assert face_pairs
    images = [Image.open(f).convert("RGB") for pair in face_pairs for f in pair]
    items, thumbs = _items(images)
    result = find_groups(items, _options(), thumbs=lambda idx: thumbs[idx])
    assert _groups(result.keeper) == {frozenset({2 * k, 2 * k + 1}) for k in range(len(face_pairs))}


# -- the stage over a workspace ------------------------------------------------------------------------------


def _save(folder: Path, name: str, im: Image.Image, quality: int = 92) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if name.endswith(".png"):
        im.save(path)
    else:
        im.save(path, "JPEG", quality=quality)
    return path


@pytest.fixture
def photo_ws(ws: Workspace, catalog: Catalog, tmp_path: Path) -> tuple[Workspace, Catalog, Path]:
    folder = tmp_path / "in"
    obama = _small("obama", 400)
    _save(folder, "obama.jpg", obama, 95)
    _save(folder, "obama_half.jpg", EDITS["resize"](obama), 95)
    _save(folder, "obama_q30.jpg", obama, 30)
    _save(folder, "obama_mirror.jpg", EDITS["hflip"](obama), 80)
    _save(folder, "obama2.jpg", _small("obama2", 400))
    _save(folder, "biden.jpg", _small("biden", 400))
    rocket = _small("rocket_no_face", 300)
    _save(folder, "rocket.png", rocket)
    Image.fromarray(np.asarray(rocket)).save(folder / "rocket.bmp")  # identical pixels, other file
    import_paths(ws, catalog, [folder])
    return ws, catalog, folder


def _dups(catalog: Catalog) -> dict[str, tuple]:
    rows = catalog.conn.execute(
        "SELECT s.location, i.id, i.dup_group, i.dup_of, i.dup_distance, i.dup_transform, i.dup_kind "
        "FROM images i JOIN sources s ON s.image_id = i.id").fetchall()
    return {Path(r["location"]).name: tuple(r)[1:] for r in rows}


def test_stage_marks_groups_keeper_by_quality_and_never_deletes(photo_ws):
    ws, catalog, _ = photo_ws
    summary = run_dedup(ws, catalog, DedupOptions.from_config(ws, faces=False))
    d = _dups(catalog)
    keeper = d["obama.jpg"][0]
    assert d["obama.jpg"][1:3] == (keeper, None)                          # the keeper leads its group
    for name in ("obama_half.jpg", "obama_q30.jpg", "obama_mirror.jpg"):  # lower resolution / JPEG quality
        assert d[name][1:3] == (keeper, keeper)
    assert d["obama_mirror.jpg"][4] == "hflip"
    assert d["rocket.png"][1] is not None and {d["rocket.png"][5], d["rocket.bmp"][5]} == {None, "pixels"}
    assert d["obama2.jpg"][1:] == d["biden.jpg"][1:] == (None,) * 5
    assert summary.photo_level.duplicates == 4 and summary.photo_level.group_count == 2
    assert catalog.counts().images == 8 and all((ws.root / p).is_file() for (p,) in
                                                    catalog.conn.execute("SELECT path FROM images"))


def test_reduced_jpeg_decode_hashes_like_the_full_decode_and_only_collisions_decode_in_full():
    """A JPEG is hashed from a reduced grayscale decode; its digest can only rule twins out, so a collision (or
    a lossless file of the same size and near hash) is what sends a file to a full decode."""
    im = _small("obama2", 400)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    reduced = decode_reduced(data, "obama2.jpg", 10**8)
    assert not is_exact(reduced.digest) and min(reduced.gray.shape) < min(im.size)  # reduced, not decoded in full
    full = _fingerprint(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    fast = _fingerprint_gray(reduced.gray, reduced.digest)
    assert hamming(fast.hash, full.hash) <= 4
    assert max(hamming(a, b) for a, b in zip(fast.windows, full.windows, strict=True)) <= 4
    assert full_digest(data, "obama2.jpg", 10**8) == full.pixels and is_exact(full.pixels)
    keys = np.array([1, 1, 2, 3, 4], dtype=np.uint64)                 # items 0 and 1 share a reduced digest
    exact = np.array([False, False, False, True, False])
    dims = np.array([7, 7, 7, 7, 9])
    hashes = np.array([0, 0, 0b11, 0, 0], dtype=np.uint64)          # item 2 is 2 bits from exact item 3
    assert twin_candidates(keys, exact, dims, hashes).tolist() == [0, 1, 2]  # item 4: another size


def test_reduced_jpeg_path_applies_exif_orientation_and_hands_odd_files_to_the_checked_decode():
    """OpenCV decodes ordinary JPEGs at reduced scale; a turned EXIF tag is honoured there, and CMYK, truncated
    and over-the-limit files go to media.decode, which hashes the first and refuses the others by name."""
    im = _small("obama2", 400)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown turned a quarter clockwise
    buf = io.BytesIO()
    im.transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", quality=90, exif=exif.tobytes())
    turned = decode_reduced(buf.getvalue(), "turned.jpg", 10**8)
    assert not is_exact(turned.digest) and turned.gray.shape[0] > turned.gray.shape[1]  # upright, like im
    upright = _fingerprint(np.asarray(im))
    assert hamming(_fingerprint_gray(turned.gray, turned.digest).hash, upright.hash) <= 4
    cmyk = io.BytesIO()
    im.convert("CMYK").save(cmyk, "JPEG", quality=90)
    assert is_exact(decode_reduced(cmyk.getvalue(), "cmyk.jpg", 10**8).digest)  # the full, checked path
    plain = io.BytesIO()
    im.save(plain, "JPEG", quality=90)
    with pytest.raises(ImageError, match=r"cut\.jpg"):
        decode_reduced(plain.getvalue()[: len(plain.getvalue()) // 2], "cut.jpg", 10**8)
    with pytest.raises(ImageError, match="over the 1,000-pixel limit"):
        decode_reduced(plain.getvalue(), "big.jpg", 1000)


def test_identical_pixels_in_a_jpeg_and_its_lossless_copy_and_a_retagged_jpeg_are_pixel_twins(ws, catalog,
                                                                                                 tmp_path: Path):
    folder = tmp_path / "twins"
    folder.mkdir()
    im = _small("biden", 400)
    im.save(folder / "biden.jpg", "JPEG", quality=85)
    im.save(folder / "biden_retagged.jpg", "JPEG", quality=85, comment=b"re-posted")  # same pixels, new bytes
    Image.open(folder / "biden.jpg").convert("RGB").save(folder / "biden_decoded.png")  # its pixels, lossless
    _small("obama", 400).save(folder / "obama.jpg", "JPEG", quality=85)
    import_paths(ws, catalog, [folder])
    summary = run_dedup(ws, catalog, DedupOptions.from_config(ws, faces=False))
    d = _dups(catalog)
    kinds = sorted(str(d[n][5]) for n in ("biden.jpg", "biden_retagged.jpg", "biden_decoded.png"))
    assert kinds == ["None", "pixels", "pixels"] and d["obama.jpg"][1:] == (None,) * 5
    assert summary.photo_level.stats["full_decodes"] == 2   # the two JPEGs; obama's reduced digest stands alone
    again = run_dedup(ws, catalog, DedupOptions.from_config(ws, faces=False))
    assert again.photo_level.hashed == 0 and again.photo_level.stats["full_decodes"] == 0  # full digests are cached


def test_off_centre_and_mirrored_trims_of_bundled_photos_are_caught_and_others_are_not():
    """The bench's hardest edits on the bundled photos: 5% trimmed all on one side (both axes), mirrored too."""
    extra, truth = [], []
    for k, name in enumerate(PEOPLE):
        base = _small(name)
        w, h = base.size
        dx, dy = round(w * 0.05), round(h * 0.05)
        boxes = [(0, 0, w - dx, h - dy), (dx, dy, w, h), (dx, 0, w, h - dy)]
        extra += [base, base.crop(boxes[k % 3]), base.transpose(Image.Transpose.FLIP_LEFT_RIGHT).crop(boxes[2])]
        truth += [k, k, k]
    extra += [_small(n) for n in OTHERS]
    truth += [10 + i for i in range(len(OTHERS))]
    items, thumbs = _items(extra)
    result = find_groups(items, _options(), thumbs=lambda idx: thumbs[idx])
    expected = {frozenset(i for i, t in enumerate(truth) if t == k) for k in range(len(PEOPLE))}
    assert _groups(result.keeper) == expected


def test_rerun_uses_the_cache_and_a_better_copy_takes_over(photo_ws, tmp_path: Path):
    ws, catalog, _ = photo_ws
    opts = DedupOptions.from_config(ws, faces=False)
    assert run_dedup(ws, catalog, opts).photo_level.hashed == 8
    again = run_dedup(ws, catalog, opts)
    assert (again.photo_level.hashed, again.photo_level.cached, again.photo_level.changed) == (0, 8, 0)
    # Prove the cached hashes are what is used: corrupt one, re-run, the copy drops out of its group.
    q30 = catalog.conn.execute("SELECT i.path FROM images i JOIN sources s ON s.image_id=i.id "
                               "WHERE s.location LIKE '%obama_q30.jpg'").fetchone()[0]
    with catalog.transaction():
        catalog.conn.execute("UPDATE dedup_hashes SET hash=?, hash_flip=?, windows=? WHERE path=?",
                             (0x0F0F0F0F0F0F0F0F, 0x0F0F0F0F0F0F0F0F, bytes.fromhex("0F") * 64, q30))
    tampered = run_dedup(ws, catalog, opts)
    assert tampered.photo_level.hashed == 0 and _dups(catalog)["obama_q30.jpg"][2] is None
    redo = run_dedup(ws, catalog, opts, redo=True)
    assert redo.photo_level.hashed == 8 and _dups(catalog)["obama_q30.jpg"][2] is not None
    # A larger copy arrives: only it is hashed, and it becomes the keeper of the old group.
    big = _small("obama", 640)
    _save(tmp_path / "later", "obama_large.jpg", big, 95)
    import_paths(ws, catalog, [tmp_path / "later"])
    later = run_dedup(ws, catalog, opts)
    d = _dups(catalog)
    assert later.photo_level.hashed == 1
    assert d["obama_large.jpg"][1:3] == (d["obama_large.jpg"][0], None)
    assert d["obama.jpg"][2] == d["obama_large.jpg"][0] and d["obama_half.jpg"][2] == d["obama_large.jpg"][0]


def test_a_catalog_from_before_the_four_windows_is_migrated_and_hashed_again(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch):
    """v6 drops the one-window fingerprint columns and the rows cached with them; the next run hashes again."""
    _save(tmp_path / "in", "obama.jpg", _small("obama"), 90)
    _save(tmp_path / "in", "obama_mirrored.jpg", _small("obama").transpose(Image.Transpose.FLIP_LEFT_RIGHT), 90)
    with monkeypatch.context() as m:
        m.setattr(migrations_mod, "MIGRATIONS", catalog_mod.MIGRATIONS[:5])  # migrate() reads them there
        ws = init_workspace(tmp_path / "old")
        with Catalog.open(ws.catalog_path) as old:
            import_paths(ws, old, [tmp_path / "in"])
            with old.transaction():
                old.conn.execute("INSERT INTO dedup_hashes (path, algo, stamp, hash, window, window_flip, hashed_at) "
                                 "SELECT path, 'phash/w95/v2', sha256, 1, 2, 3, 'then' FROM images")
    with Catalog.open(ws.catalog_path) as cat:
        assert cat.schema_version == len(catalog_mod.MIGRATIONS)
        cols = {r[1] for r in cat.conn.execute("PRAGMA table_info(dedup_hashes)")}
        assert "windows" in cols and not {"window", "window_flip"} & cols
        assert cat.conn.execute("SELECT COUNT(*) FROM dedup_hashes").fetchone()[0] == 0
        summary = run_dedup(ws, cat, DedupOptions.from_config(ws, faces=False))
        assert summary.photo_level.hashed == 2 and summary.photo_level.duplicates == 1
        assert summary.photo_level.by_transform == {"hflip": 1}


def test_dry_run_writes_nothing(photo_ws):
    ws, catalog, _ = photo_ws
    before = "\n".join(catalog.conn.iterdump())
    summary = run_dedup(ws, catalog, DedupOptions.from_config(ws), dry_run=True)
    # 4 copies, 2 keepers
    assert summary.photo_level.duplicates == 4 and summary.photo_level.changed == 6 and summary.groups
    assert "\n".join(catalog.conn.iterdump()) == before
    assert catalog.conn.execute("SELECT COUNT(*) FROM dedup_hashes").fetchone()[0] == 0


def test_interrupted_hashing_resumes_where_it_stopped(photo_ws, monkeypatch: pytest.MonkeyPatch):
    ws, catalog, _ = photo_ws
    monkeypatch.setattr(dedup_stage, "BATCH", 3)
    seen = []

    class StopAfterTwoBatches(Silent):
        def advance(self, n: int = 1) -> None:
            seen.append(n)
            if len(seen) == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_dedup(ws, catalog, DedupOptions.from_config(ws, faces=False), progress=StopAfterTwoBatches())
    assert catalog.conn.execute("SELECT COUNT(*) FROM dedup_hashes").fetchone()[0] == 6  # two whole batches
    assert run_dedup(ws, catalog, DedupOptions.from_config(ws, faces=False)).photo_level.hashed == 2


def test_progress_is_plain_events_and_a_file_that_stopped_decoding_is_a_failure(photo_ws):
    ws, catalog, _ = photo_ws
    first = RecordingProgress()
    run_dedup(ws, catalog, DedupOptions.from_config(ws, faces=False), progress=first)
    assert first.events[0] == ("start", "hash photos", 8, "files") and first.events[-1] == ("finish",)
    assert sum(e[1] for e in first.events if e[0] == "advance") == 8
    cached = RecordingProgress()
    run_dedup(ws, catalog, DedupOptions.from_config(ws, faces=False), progress=cached)
    assert cached.events == []  # nothing to hash: no task at all
    path = catalog.conn.execute("SELECT i.path FROM images i JOIN sources s ON s.image_id=i.id "
                                "WHERE s.location LIKE '%biden.jpg'").fetchone()[0]
    (ws.root / path).write_bytes(b"no longer a JPEG")
    broken = run_dedup(ws, catalog, DedupOptions.from_config(ws, faces=False), redo=True)
    assert [f.item for f in broken.photo_level.failed] == [path] and isinstance(broken.photo_level.failed[0], Failure)
    assert broken.photo_level.failed[0].error and broken.photo_level.hashed == 8 and broken.photo_level.duplicates == 4


def test_settings_are_documented_and_checked(ws: Workspace):
    toml = render_default_toml()
    assert "[dedup]" in toml and 'keeper = "resolution,jpeg_quality,bytes,sharpness"' in toml
    ws.config_path.write_text(ws.config_path.read_text().replace(
        'keeper = "resolution,jpeg_quality,bytes,sharpness"', 'keeper = "biggest"'))
    with pytest.raises(ConfigError, match="keeper"):
        DedupOptions.from_config(ws)


# -- faces after crop, export and the command line ------------------------------------------------------------


@pytest.fixture(scope="module")
def cropped_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Photos with faces, cropped once: a re-post with a border and caption, a mirrored copy, other people."""
    root = tmp_path_factory.mktemp("faces")
    folder = root / "in"
    obama = _small("obama", 400)
    _save(folder, "obama.jpg", obama, 95)
    framed = ImageOps.expand(obama, border=(40, 30, 40, 110), fill="white")
    ImageDraw.Draw(framed).text((20, framed.height - 90), "Official portrait, 2012", fill="black",
                                font=ImageFont.load_default(size=26))
    _save(folder, "obama_reposted.jpg", framed, 90)
    _save(folder, "obama_mirror_small.jpg", EDITS["resize"](EDITS["hflip"](obama)), 90)
    _save(folder, "obama2.jpg", _small("obama2", 400))
    _save(folder, "biden.jpg", _small("biden", 400))
    _save(folder, "rocket.jpg", _small("rocket_no_face", 300))
    _save(folder, "rocket_copy.jpg", _small("rocket_no_face", 200))
    ws = init_workspace(root / "ws")
    with Catalog.open(ws.catalog_path) as catalog:
        import_paths(ws, catalog, [folder])
        run_crop(ws, catalog, CropOptions.from_config(ws, size=128, device="cpu"))
    return ws


def _faces(catalog: Catalog) -> dict[str, dict]:
    """Each photo's face with its state in force (no filter has run here: a face nobody grouped is pending)."""
    rows = catalog.conn.execute(
        "SELECT s.location, f.*, st.state FROM faces f JOIN sources s ON s.image_id = f.image_id "
        "JOIN item_state st ON st.face_id = f.id").fetchall()
    return {Path(r["location"]).name: dict(r) for r in rows}


def test_faces_of_reposted_and_duplicate_photos_are_marked(cropped_ws: Workspace):
    with Catalog.open(cropped_ws.catalog_path) as catalog:
        summary = run_dedup(cropped_ws, catalog, DedupOptions.from_config(cropped_ws))
        photos, faces = _dups(catalog), _faces(catalog)
    assert photos["obama_reposted.jpg"][2] is None  # the border and caption hide it from the photo hash...
    assert photos["obama_mirror_small.jpg"][2] == photos["obama.jpg"][0]
    reposted, original = faces["obama_reposted.jpg"], faces["obama.jpg"]
    pair = {reposted["dup_of"], original["dup_of"]}
    assert pair in ({None, reposted["id"]}, {None, original["id"]})  # ...but not from the face hash
    assert {reposted["state"], original["state"]} == {"pending", "duplicate"}
    mirror = faces["obama_mirror_small.jpg"]
    assert mirror["state"] == "duplicate" and mirror["dup_kind"] == "image" and mirror["dup_transform"] == "hflip"
    assert faces["obama2.jpg"]["state"] == faces["biden.jpg"]["state"] == "pending"
    assert faces["obama2.jpg"]["dup_group"] is None
    assert summary.face_level.duplicates == 2 and summary.face_level.hashed == 5


def test_face_level_is_incremental_and_restores_its_fields_cleared_elsewhere(cropped_ws: Workspace):
    with Catalog.open(cropped_ws.catalog_path) as catalog:
        opts = DedupOptions.from_config(cropped_ws)
        run_dedup(cropped_ws, catalog, opts)
        again = run_dedup(cropped_ws, catalog, opts)
        assert (again.face_level.hashed, again.face_level.changed, again.photo_level.changed) == (0, 0, 0)
        with catalog.transaction():
            cleared = catalog.conn.execute(
                "UPDATE faces SET dup_group=NULL, dup_of=NULL, dup_distance=NULL, dup_transform=NULL, "
                "dup_kind=NULL WHERE dup_kind IS NOT NULL").rowcount
        assert _duplicate_faces(catalog) == 1  # the mirrored photo's face: a duplicate through its photo
        repaired = run_dedup(cropped_ws, catalog, opts)
        assert cleared == repaired.face_level.changed == 2
        assert _duplicate_faces(catalog) == 2


def _duplicate_faces(catalog: Catalog) -> int:
    return catalog.conn.execute(
        "SELECT COUNT(*) FROM item_state WHERE face_id IS NOT NULL AND state='duplicate'").fetchone()[0]


def test_export_carries_dup_fields_and_layouts_drop_duplicates(cropped_ws: Workspace, tmp_path: Path):
    with Catalog.open(cropped_ws.catalog_path) as catalog:
        run_dedup(cropped_ws, catalog, DedupOptions.from_config(cropped_ws))
        text = cropped_ws.config_path.read_text(encoding="utf-8")  # the rules decide, with one that never fires
        cropped_ws.config_path.write_text(text.replace('enabled = "all"', 'enabled = "grayscale"'), encoding="utf-8")
        run_filter(cropped_ws, catalog)
        result = export(cropped_ws, catalog, fmt="jsonl", out_dir=tmp_path / "out", layout="imagefolder")
    rows = {Path(r["source_path"]).name: r for r in map(json.loads, result.manifest.read_text().splitlines())}
    mirror, kept = rows["obama_mirror_small.jpg"], rows["obama.jpg"]
    assert mirror["status"] == "duplicate" and mirror["dup_group"] == kept["dup_group"] is not None
    assert mirror["dup_of"] in (kept["sample_id"], rows["obama_reposted.jpg"]["sample_id"])
    assert isinstance(mirror["dup_distance"], float)
    copy, rocket = rows["rocket_copy.jpg"], rows["rocket.jpg"]   # photos without a face: the photo row
    # no face outranks duplicate in the state (catalog.state); the copy still points at the photo it copies
    assert copy["status"] == "no_face" and copy["dup_of"] == rocket["sample_id"] and rocket["dup_of"] is None
    assert rows["biden.jpg"]["dup_group"] is None and rows["biden.jpg"]["status"] == "keep"
    assert result.layout_files == 3  # obama (or its re-post), obama2, biden: duplicates stay out of the layout


def test_cli_dedup_dry_run_json_and_status(photo_ws):
    ws, _, _ = photo_ws
    runner = CliRunner()
    dry = runner.invoke(app, ["dedup", "-w", str(ws.root), "--dry-run", "--show", "5"])
    assert dry.exit_code == 0, dry.output
    assert "dry run" in dry.output and "obama_mirror.jpg" in dry.output and "hflip" in dry.output
    real = runner.invoke(app, ["dedup", "-w", str(ws.root), "--json", "--no-faces"])
    data = json.loads(real.stdout)
    assert data["photo_level"]["duplicates"] == 4 and data["photo_level"]["hashed"] == 8 and not data["dry_run"]
    keepers = {g["keeper"].rsplit("/", 1)[-1] for g in data["groups"]}
    assert keepers == {"obama.jpg", "rocket.bmp"}  # identical pixels: the larger file wins the bytes criterion
    strict = json.loads(runner.invoke(app, ["dedup", "-w", str(ws.root), "--json", "--threshold", "0"]).stdout)
    assert strict["photo_level"]["hashed"] == 0  # the cache serves a changed threshold
    members = [m for g in strict["groups"] if g["level"] == "photo" for m in g["members"]]
    assert members and all(m["distance"] == 0 for m in members)  # --threshold 0: only hash-identical copies
    status = json.loads(runner.invoke(app, ["status", "-w", str(ws.root), "--json"]).stdout)
    assert status["dedup"]["image_duplicates"] == strict["photo_level"]["duplicates"]


def test_catalog_rows_are_plain_sqlite(photo_ws):
    """The cache holds signed 64-bit integers SQLite accepts, and reads back to the same unsigned hash."""
    ws, catalog, _ = photo_ws
    run_dedup(ws, catalog, DedupOptions.from_config(ws, faces=False))
    path, h = catalog.conn.execute("SELECT i.path, d.hash FROM images i JOIN dedup_hashes d ON d.path=i.path "
                                   "JOIN sources s ON s.image_id=i.id WHERE s.location LIKE '%obama2.jpg'").fetchone()
    assert isinstance(h, int) and -(2**63) <= h < 2**63
    reduced = Image.open(ws.resolve(path)).convert("L").resize((64, 64), Image.Resampling.LANCZOS)
    assert h & 0xFFFFFFFFFFFFFFFF == hash_to_int(imagehash.phash(reduced))
    with pytest.raises(sqlite3.IntegrityError), catalog.transaction():  # one row per file and setting
        catalog.conn.execute("INSERT INTO dedup_hashes (path, algo, stamp, hashed_at) VALUES (?, ?, 'x', 'y')",
                             (path, DEFAULTS.image_algo))


def test_random_edits_stay_within_the_documented_threshold():
    """Brightness and recompression barely move pHash: they must stay far inside the threshold."""
    rng = random.Random(0)
    for name in PEOPLE:
        base = _small(name)
        fp = _fingerprint(np.asarray(base))
        for _ in range(2):
            edited = _jpeg(ImageEnhance.Brightness(base).enhance(rng.uniform(0.85, 1.15)), rng.randint(30, 60))
            assert hamming(fp.hash, _fingerprint(np.asarray(edited)).hash) <= 4


def test_edges_helper_selects():
    e = Edges(np.array([0, 1]), np.array([2, 3]), np.array([1, 2], dtype=np.int16), np.array([0, 1], dtype=np.int8))
    assert len(e.select(np.array([False, True]))) == 1 and len(Edges.empty()) == 0


@pytest.mark.timeout(120)
def test_a_worker_killed_mid_hash_is_reported_with_its_files_not_waited_on(ws: Workspace, catalog: Catalog,
                                                                            tmp_path: Path, monkeypatch):
    """A native crash in a fingerprinting process (a decoder segfault on a hostile file) must end the run
    with a message naming the files in flight, and a re-run must finish; a plain Pool would wait forever."""
    import os

    if dedup_stage.WORKERS < 2:
        pytest.skip("one CPU: fingerprinting runs in-process, there is no worker to lose")
    rng = np.random.default_rng(3)
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(3 * dedup_stage.CHUNK):  # several chunks, so the worker pool is used
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / f"noise_{i:02d}.png")
    import_paths(ws, catalog, [folder])
    victim = catalog.conn.execute("SELECT path FROM images ORDER BY path LIMIT 1 OFFSET 20").fetchone()[0]
    real = dedup_stage._fingerprint_row

    def crash_on_victim(job, rel, stamp):  # runs in the forked worker
        if rel == victim:
            os._exit(139)
        return real(job, rel, stamp)

    monkeypatch.setattr(dedup_stage, "_fingerprint_row", crash_on_victim)
    with pytest.raises(Exception, match="worker died") as info:
        run_dedup(ws, catalog, DedupOptions.from_config(ws, faces=False))
    assert victim in str(info.value)
    monkeypatch.setattr(dedup_stage, "_fingerprint_row", real)
    summary = run_dedup(ws, catalog, DedupOptions.from_config(ws, faces=False))
    hashed = catalog.conn.execute("SELECT COUNT(DISTINCT path) FROM dedup_hashes WHERE error IS NULL").fetchone()[0]
    assert hashed == 3 * dedup_stage.CHUNK and summary.photo_level.failed == []
