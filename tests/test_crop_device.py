"""The crop stage's torch pipeline (faces/crop_device.py) end to end on a CPU, against the OpenCV pipeline:
the same photos judged the same way (faces, failures, no-face), the same catalog numbers, crops within a grey
level; and on a CUDA machine, CUDA against the CPU torch run."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facecurate import media
from facecurate.catalog import Catalog
from facecurate.errors import ImageError
from facecurate.events import SILENT
from facecurate.faces import crop_device
from facecurate.faces.crop import CropOptions, run_crop, uses_torch_pipeline
from facecurate.faces.crop_photo import Limits
from facecurate.ingest import import_paths
from facecurate.workspace import init_workspace
from tests.conftest import DEV, RecordingProgress

MAD_LIMIT = 1.0
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device "
                                "(torch.cuda.is_available() is False): run on a GPU machine")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo photos, one turned by EXIF orientation 6 (stored sideways), and a PNG."""
    from facecurate.demo import DEMO_DATA

    folder = tmp_path_factory.mktemp("photos")
    for p in DEMO_DATA.glob("*.jpg"):
        (folder / p.name).write_bytes(p.read_bytes())
    obama = Image.open(DEMO_DATA / "obama2.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed turned 90 degrees clockwise: stored turned the other way
    obama.transpose(Image.Transpose.ROTATE_90).save(folder / "sideways.jpg", quality=92, exif=exif.tobytes())
    Image.open(DEMO_DATA / "biden.jpg").save(folder / "biden.png")
    return folder


def _damage(ws, catalog: Catalog) -> None:
    """Two stored copies damaged after import (a bad disk, a partial copy): crop must record them and go on."""
    for name, damage in (("obama3.jpg", lambda b: b[: len(b) // 3]), ("astronaut.jpg", lambda b: b"<html>")):
        row = catalog.conn.execute("SELECT i.path FROM images i JOIN sources s ON s.image_id = i.id "
                                   "WHERE s.location LIKE ?", (f"%/{name}",)).fetchone()
        stored = ws.resolve(row["path"])
        stored.write_bytes(damage(stored.read_bytes()))


def _crop(root: Path, photos: Path, device_decode: bool | None = None, damaged: bool = True, **settings: object):
    """One workspace over ``photos`` cropped with ``settings``: (workspace, summary, rows by photo)."""
    ws = init_workspace(root)
    with Catalog.open(ws.catalog_path) as catalog:
        import_paths(ws, catalog, [photos])
        if damaged:
            _damage(ws, catalog)
        opts = CropOptions.from_config(ws, size=192, image_format="png", **settings)
        if device_decode is None:
            summary = run_crop(ws, catalog, opts)
        else:  # the stage's own entry, to force torchvision's decoder where run_crop would not use it
            cfg = ws.config()
            limits = Limits(cfg.get("media", "max_pixels"), cfg.get("media", "max_bytes"),
                             media.PixelBudget(cfg.get("media", "decode_budget")))
            summary = crop_device.run_torch_crop(ws, catalog, opts, catalog.images_to_crop(), limits, SILENT,
                                                 device_decode=device_decode)
        rows = catalog.conn.execute(
            "SELECT s.location, i.crop_state, i.crop_error, f.* FROM images i JOIN sources s ON s.image_id = i.id "
            "LEFT JOIN faces f ON f.image_id = i.id ORDER BY s.location, f.face_index").fetchall()
    return ws, summary, {Path(r["location"]).name: dict(r) for r in rows}


def _assert_same_run(a, b, px: float = 0.05, share: float = 1e-4) -> list[float]:
    """Same photos, states, faces and numbers (boxes, landmarks and quads within ``px``, fractions and scores
    within ``share``); crops within MAD_LIMIT. Returns the MADs."""
    ws_a, sum_a, rows_a = a
    ws_b, sum_b, rows_b = b
    assert (sum_a.images, sum_a.with_face, sum_a.no_face, sum_a.faces) == \
        (sum_b.images, sum_b.with_face, sum_b.no_face, sum_b.faces)
    assert sorted(f.item for f in sum_a.failed) == sorted(f.item for f in sum_b.failed)
    assert rows_a.keys() == rows_b.keys()
    mads = []
    for name, ra in rows_a.items():
        rb = rows_b[name]
        assert (ra["crop_state"], ra["crop_error"]) == (rb["crop_state"], rb["crop_error"]), name
        if ra["crop_path"] is None:
            assert rb["crop_path"] is None, name
            continue
        for key in ("bbox", "landmarks", "quad"):
            assert np.allclose(json.loads(ra[key]), json.loads(rb[key]), atol=px), (name, key)
        for key in ("oob_fraction", "above_fraction", "side_fraction", "eye_angle", "det_score"):
            assert ra[key] == pytest.approx(rb[key], abs=share), (name, key)
        assert ra["crop_path"] == rb["crop_path"]
        crop_a = np.asarray(Image.open(ws_a.resolve(ra["crop_path"]))).astype(np.int16)
        crop_b = np.asarray(Image.open(ws_b.resolve(rb["crop_path"]))).astype(np.int16)
        mads.append(float(np.abs(crop_a - crop_b).mean()))
        assert mads[-1] <= MAD_LIMIT, name
    return mads


@pytest.fixture(scope="module")
def opencv_run(photos: Path, tmp_path_factory: pytest.TempPathFactory):
    return _crop(tmp_path_factory.mktemp("opencv"), photos, device="cpu", pipeline="opencv", detect_max_side=640)


def test_torch_pipeline_on_cpu_matches_the_opencv_pipeline(opencv_run, photos: Path, tmp_path: Path):
    torch_run = _crop(tmp_path / "torch", photos, device="cpu", pipeline="torch", detect_max_side=640)
    _, summary, rows = torch_run
    assert summary.faces == 6 and summary.no_face == 1 and len(summary.failed) == 2  # the real work was done
    assert rows["obama_partial_face.jpg"]["oob_fraction"] > 0.05  # a padded crop among those compared
    # EXIF orientation applied before detection: the turned copy's face is where it is in the original
    assert np.allclose(json.loads(rows["sideways.jpg"]["bbox"]), json.loads(rows["obama2.jpg"]["bbox"]), atol=4)
    _assert_same_run(opencv_run, torch_run)


def test_torchvision_decoding_path_matches_the_opencv_pipeline(opencv_run, photos: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    """The GPU's decode path, with torchvision's CPU decoder in nvjpeg's place: every JPEG larger than
    detect_max_side (640 here) is decoded in full by torchvision, EXIF orientation applied to the tensor."""
    decoded: list[int] = []
    real = crop_device.decode_on_device

    def counting(items, device):  # the real decoder, counted
        out = real(items, device)
        decoded.extend(1 for img in out if img is not None)
        return out

    monkeypatch.setattr(crop_device, "decode_on_device", counting)
    _assert_same_run(opencv_run, _crop(tmp_path / "tv", photos, device_decode=True, device="cpu",
                                       pipeline="torch", detect_max_side=640))
    assert len(decoded) == 5  # obama, obama2, sideways, biden, obama_partial_face (obama3 is damaged)


def test_torch_pipeline_commits_batch_by_batch(photos: Path, tmp_path: Path):
    ws = init_workspace(tmp_path / "ws")
    with Catalog.open(ws.catalog_path) as catalog:
        import_paths(ws, catalog, [photos])
        opts = CropOptions.from_config(ws, size=64, device="cpu", pipeline="torch", device_batch_size=4)
        assert crop_device.batch_size(opts, torch.device("cpu")) == 4
        progress = RecordingProgress()
        summary = run_crop(ws, catalog, opts, progress=progress)
        assert progress.events[0][1] == "crop (cpu, torch)"
        assert [e[1] for e in progress.events if e[0] == "advance"] == [4, 4, 1]
        assert summary.images == 9
        assert run_crop(ws, catalog, opts).images == 0  # resumable: nothing left


def test_ffhq_alignment_on_the_torch_pipeline_is_align_py_s(photos: Path, tmp_path: Path):
    """No tensor version of the published script's pixels: the torch pipeline cuts them with align.py."""
    one = tmp_path / "one"
    one.mkdir()
    (one / "obama.jpg").write_bytes((photos / "obama.jpg").read_bytes())
    a = _crop(tmp_path / "a", one, damaged=False, device="cpu", pipeline="opencv", alignment="ffhq")
    b = _crop(tmp_path / "b", one, damaged=False, device="cpu", pipeline="torch", alignment="ffhq")
    assert _assert_same_run(a, b) == [0.0]


def test_pipeline_choice(tmp_path: Path):
    ws = init_workspace(tmp_path / "ws")
    assert not uses_torch_pipeline(CropOptions.from_config(ws, device="cpu"))  # auto on a CPU: OpenCV
    assert uses_torch_pipeline(CropOptions.from_config(ws, device="cpu", pipeline="torch"))
    assert not uses_torch_pipeline(CropOptions.from_config(ws, device="cpu", pipeline="opencv"))
    opts = CropOptions.from_config(ws, device="cpu", pipeline="torch", batch_size=7)
    assert crop_device.batch_size(opts, torch.device("cpu")) == 7  # 0 on a CPU: crop.batch_size


@pytest.mark.parametrize("orientation", range(1, 9))
def test_device_decode_orients_like_media(orientation: int, demo_dir: Path):
    """torchvision's decoder (nvjpeg's stand-in on a CPU) plus ``orient`` gives media.decode's pixels."""
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.open(demo_dir / "astronaut.jpg").crop((0, 0, 300, 200)).save(buf, "JPEG", quality=90, exif=exif.tobytes())
    data = buf.getvalue()
    head = media.header(data, "x.jpg", 10**8)
    assert head.orientation == orientation and head.stored_size == (300, 200)
    reference = media.decode(data, "x.jpg", 10**8).pixels
    [img] = crop_device.decode_on_device([crop_device._Encoded(data, head, media.decode(data, "x", 10**8))],
                                         torch.device("cpu"))
    assert img is not None
    got = img.permute(1, 2, 0).numpy()
    assert got.shape == reference.shape
    assert np.abs(got.astype(int) - reference.astype(int)).mean() < 0.5


def test_header_gate_refuses_before_any_decoder(odd_images: dict[str, Path]):
    with pytest.raises(ImageError) as bomb:
        media.header(odd_images["bomb.png"].read_bytes(), "bomb.png", 10**8)
    assert bomb.value.reason == "too_large"
    with pytest.raises(ImageError) as page:
        media.header(odd_images["page.jpg"].read_bytes(), "page.jpg", 10**8)
    assert page.value.reason == "not_an_image"
    assert media.header(odd_images["cmyk.jpg"].read_bytes(), "cmyk.jpg", 10**8).mode == "CMYK"  # -> CPU decoder


def test_a_file_nvjpeg_refuses_falls_back_to_the_cpu(demo_dir: Path):
    data = (demo_dir / "obama.jpg").read_bytes()
    head = media.header(data, "obama.jpg", 10**8)
    copy = media.decode(data, "obama.jpg", 10**8, max_side=256)
    garbage = data[:200] + bytes(1000) + b"\xff\xd9"  # header intact, scan destroyed
    out = crop_device.decode_on_device([crop_device._Encoded(data, head, copy),
                                        crop_device._Encoded(garbage, head, copy)], torch.device("cpu"))
    assert out[0] is not None and out[1] is None  # the bad file costs only itself


@needs_cuda
def test_cuda_pipeline_matches_the_cpu_torch_pipeline(photos: Path, tmp_path: Path):
    """``crop --device cuda`` (nvjpeg, detection and alignment on the GPU) against the same torch code on the
    CPU, and against the OpenCV pipeline; dev photos too when ../shared is present."""
    folders = [photos] + ([DEV / "eyes_closed_vs_open_fullres_small"] if DEV.is_dir() else [])
    for k, folder in enumerate(folders):
        damaged = folder == photos
        cuda = _crop(tmp_path / f"cuda{k}", folder, damaged=damaged, device="cuda", detect_max_side=640)  # auto
        assert cuda[1].device.startswith("cuda")
        cpu = _crop(tmp_path / f"cpu{k}", folder, damaged=damaged, device="cpu", pipeline="torch",
                    detect_max_side=640)
        opencv = _crop(tmp_path / f"cv{k}", folder, damaged=damaged, device="cpu", pipeline="opencv",
                       detect_max_side=640)
        # MTCNN on cuDNN (TF32 convolutions by default) is not bit-equal to the CPU's: landmarks may differ by
        # a fraction of a pixel; the crops' MAD stays the bar
        _assert_same_run(cpu, cuda, px=1.0, share=0.01)
        _assert_same_run(opencv, cuda, px=1.0, share=0.01)


@needs_cuda
def test_auto_batch_size_follows_gpu_memory(tmp_path: Path):
    ws = init_workspace(tmp_path / "ws")
    opts = CropOptions.from_config(ws, device="cuda")
    free, _ = torch.cuda.mem_get_info()
    size = crop_device.batch_size(opts, torch.device("cuda"))
    assert 1 <= size <= crop_device.MAX_AUTO_BATCH
    assert size == min(crop_device.MAX_AUTO_BATCH, max(1, int(free * crop_device.MEMORY_SHARE) //
                                                       (crop_device.BYTES_PER_DETECT_PIXEL * 1024 ** 2)))
