"""crop stage over the catalog: faces found, aligned, recorded; resumable; bad files do not stop it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecurate import media
from facecurate.catalog import Catalog
from facecurate.faces.crop import CropOptions, run_crop
from facecurate.faces.crop_workers import IN_PROCESS_UP_TO, plan
from facecurate.ingest import import_paths
from facecurate.workspace import Workspace, init_workspace
from tests.conftest import RecordingProgress

FRONTAL = ("obama.jpg", "obama2.jpg", "biden.jpg", "astronaut.jpg")


@pytest.fixture
def cropped(ws: Workspace, catalog: Catalog, demo_dir: Path):
    import_paths(ws, catalog, [demo_dir])
    summary = run_crop(ws, catalog, CropOptions.from_config(ws, size=256, batch_size=4, device="cpu"))
    return ws, catalog, summary


def _faces_by_name(catalog: Catalog) -> dict[str, list]:
    rows = catalog.conn.execute(
        "SELECT s.location, f.* FROM faces f JOIN sources s ON s.image_id = f.image_id ORDER BY f.face_index")
    out: dict[str, list] = {}
    for r in rows:
        out.setdefault(Path(r["location"]).name, []).append(r)
    return out


def test_demo_photos_cropped_and_recorded(cropped):
    ws, catalog, summary = cropped
    faces = _faces_by_name(catalog)
    assert summary.images == 7 and summary.no_face == 1 and not summary.failed
    assert set(faces) == {"obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "astronaut.jpg",
                          "obama_partial_face.jpg"}
    for name, rows in faces.items():
        assert len(rows) == 1, name  # largest face only by default
        r = rows[0]
        crop = np.asarray(Image.open(ws.resolve(r["crop_path"])))
        assert crop.shape == (256, 256, 3)
        assert r["det_score"] >= 0.9 and len(json.loads(r["landmarks"])) == 5 and len(json.loads(r["quad"])) == 4
    rocket = catalog.conn.execute("SELECT crop_state FROM images i JOIN sources s ON s.image_id=i.id "
                                  "WHERE s.location LIKE '%rocket_no_face.jpg'").fetchone()
    assert rocket["crop_state"] == "no_face"


def test_frontal_eye_lines_are_level(cropped):
    _, catalog, _ = cropped
    faces = _faces_by_name(catalog)
    for name in FRONTAL:
        assert abs(faces[name][0]["eye_angle"]) < 3.0, name


def test_face_at_the_edge_reports_outside_pixels(cropped):
    _, catalog, _ = cropped
    faces = _faces_by_name(catalog)
    assert faces["obama_partial_face.jpg"][0]["oob_fraction"] > 0.05
    assert faces["obama_partial_face.jpg"][0]["side_fraction"] > 0.05
    assert faces["obama.jpg"][0]["oob_fraction"] < faces["obama_partial_face.jpg"][0]["oob_fraction"]


def test_rerun_does_only_what_is_left(cropped, demo_dir: Path, tmp_path: Path):
    ws, catalog, _ = cropped
    again = run_crop(ws, catalog, CropOptions.from_config(ws, size=256, device="cpu"))
    assert again.images == 0
    flipped = tmp_path / "flipped.jpg"
    Image.open(demo_dir / "obama.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped, quality=90)
    import_paths(ws, catalog, [flipped])
    third = run_crop(ws, catalog, CropOptions.from_config(ws, size=256, device="cpu"))
    assert third.images == 1 and third.faces == 1


def test_a_strip_photo_gets_its_further_looks_within_bounds(ws: Workspace, catalog: Catalog, tmp_path: Path):
    # 32 x 60000 passes the media gate (min_side 32); its detection copy is 1 x ~1900 px, which the tight-crop
    # look enlarged 256 times and bordered: a 150 GB allocation that ended the whole crop run.
    folder = tmp_path / "strips"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for w, h in ((32, 60000), (60000, 32)):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(folder / f"{w}x{h}.png")
    assert import_paths(ws, catalog, [folder]).new == 2
    summary = run_crop(ws, catalog, CropOptions.from_config(ws, size=128, device="cpu"))
    assert summary.no_face == 2 and not summary.failed


def test_all_faces_and_unreadable_raw_file(ws: Workspace, catalog: Catalog, demo_dir: Path, tmp_path: Path):
    # two faces side by side in one picture
    a = np.asarray(Image.open(demo_dir / "obama.jpg").convert("RGB").resize((400, 500)))
    b = np.asarray(Image.open(demo_dir / "astronaut.jpg").convert("RGB").resize((400, 500)))
    pair = tmp_path / "pair.png"
    Image.fromarray(np.concatenate([a, b], axis=1)).save(pair)
    import_paths(ws, catalog, [pair, demo_dir / "obama2.jpg"])
    # the stored copy of obama2 gets damaged after import: crop must record it and go on
    row = catalog.conn.execute("SELECT path FROM images WHERE width=626").fetchone()
    ws.resolve(row["path"]).write_bytes(b"")
    summary = run_crop(ws, catalog, CropOptions.from_config(ws, size=128, device="cpu", all_faces=True))
    assert summary.faces >= 2 and len(summary.failed) == 1
    boxes = [json.loads(r[0]) for r in catalog.conn.execute("SELECT bbox FROM faces ORDER BY face_index")]
    centres = sorted((b[0] + b[2]) / 2 for b in boxes[:2])  # the two largest: one face in each half
    assert centres[0] < 400 < centres[1]
    assert row["path"] in summary.failed[0].item and "empty" in summary.failed[0].error
    state = catalog.conn.execute("SELECT crop_state, crop_error FROM images WHERE width=626").fetchone()
    assert state["crop_state"] == "failed" and "empty" in state["crop_error"]


def test_kill_minus_9_loses_at_most_the_batch_in_flight(ws: Workspace, catalog: Catalog, demo_dir: Path,
                                                        tmp_path: Path):
    # 24 distinct photos (re-encoded at different qualities), cropped one image per batch.
    src = Image.open(demo_dir / "obama.jpg").convert("RGB")
    folder = tmp_path / "many"
    folder.mkdir()
    for q in range(24):
        src.save(folder / f"q{q}.jpg", quality=60 + q)
    import_paths(ws, catalog, [folder])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "facecurate", "crop", "--batch-size", "1", "--size", "128",
                             "--device", "cpu", "--workers", "2", "-w", str(ws.root)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done = catalog.conn.execute("SELECT COUNT(*) FROM images WHERE crop_state IS NOT NULL").fetchone()[0]
        if done >= 3 or proc.poll() is not None:
            break
        time.sleep(0.05)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(workers) == 2, "the crop ran in two worker processes"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers), "the workers die with the main process: no orphans"
    done_before = {r[0] for r in catalog.conn.execute("SELECT id FROM images WHERE crop_state='done'")}
    assert 0 < len(done_before) < 24, "the kill should land mid-run"
    # every recorded crop is a whole, decodable file
    for r in catalog.conn.execute("SELECT crop_path FROM faces"):
        assert Image.open(ws.resolve(r[0])).size == (128, 128)
    summary = run_crop(ws, catalog, CropOptions.from_config(ws, size=128, device="cpu"))
    assert summary.images == 24 - len(done_before)  # nothing already done is redone
    assert catalog.conn.execute("SELECT COUNT(*) FROM faces").fetchone()[0] == 24
    media.remove_stale_parts(ws.tmp_dir)
    assert not list(ws.root.rglob(f"{media.PART_PREFIX}*"))
    assert len(list(ws.crops_dir.rglob("*.jpg"))) == 24


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def _alive(pid: int) -> bool:
    """Running, and not a zombie (a container's init may never reap an orphan)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def _photo_folder(demo_dir: Path, folder: Path, n: int) -> Path:
    """The demo photos plus resized, re-encoded copies of obama.jpg: ``n`` distinct photos."""
    folder.mkdir()
    for p in demo_dir.glob("*.jpg"):
        (folder / p.name).write_bytes(p.read_bytes())
    src = Image.open(demo_dir / "obama.jpg").convert("RGB")
    for q in range(n - len(list(folder.iterdir()))):
        src.resize((300 + 7 * q, 370 + 9 * q)).save(folder / f"copy{q}.jpg", quality=70 + q)
    return folder


def _results(ws: Workspace, catalog: Catalog) -> dict[str, list]:
    """Every face row and its crop file's bytes, and every photo's crop state, by source file name."""
    out: dict[str, list] = {}
    for name, rows in _faces_by_name(catalog).items():
        out[name] = [(r["face_index"], r["det_score"], r["bbox"], r["landmarks"], r["quad"], r["oob_fraction"],
                      r["eye_angle"], ws.resolve(r["crop_path"]).read_bytes()) for r in rows]
    states = catalog.conn.execute("SELECT s.location, i.crop_state FROM images i JOIN sources s ON s.image_id = i.id")
    out["states"] = sorted((Path(r[0]).name, r[1]) for r in states)
    return out


def test_worker_processes_crop_exactly_what_threads_crop(ws: Workspace, catalog: Catalog, demo_dir: Path,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Both drivers of the stage on the same photos, in three batches: the same faces, landmarks, quads, crop
    bytes and states. A run of IN_PROCESS_UP_TO photos crops in threads unless workers are asked for.

    MTCNN's float sums on one torch thread differ from those on several (boxes move by ~3e-5 px), and two
    workers on a two-core machine get one thread each: the workers are given the thread count the in-process
    run had, so that only the driver differs between the two runs."""
    import torch

    from facecurate.faces import crop_workers

    folder = _photo_folder(demo_dir, tmp_path / "photos", IN_PROCESS_UP_TO)
    import_paths(ws, catalog, [folder])
    opts = dict(size=128, batch_size=3, device="cpu", all_faces=True)
    threads = run_crop(ws, catalog, CropOptions.from_config(ws, **opts))
    in_process = torch.get_num_threads()
    monkeypatch.setattr(crop_workers, "plan", lambda setting, photos, cpus=None: (setting, in_process))
    other = init_workspace(tmp_path / "other")
    with Catalog.open(other.catalog_path) as other_catalog:
        import_paths(other, other_catalog, [folder])
        processes = run_crop(other, other_catalog, CropOptions.from_config(other, workers=2, **opts))
        assert (threads.workers, processes.workers) == (0, 2)
        assert (processes.images, processes.faces, processes.no_face) == (threads.images, threads.faces,
                                                                           threads.no_face)
        assert (threads.images, threads.no_face) == (8, 1)
        assert _results(other, other_catalog) == _results(ws, catalog)


def test_a_bad_photo_in_a_worker_fails_alone_and_redo_keeps_earlier_faces(ws: Workspace, catalog: Catalog,
                                                                          demo_dir: Path, tmp_path: Path):
    folder = _photo_folder(demo_dir, tmp_path / "photos", 12)
    import_paths(ws, catalog, [folder])
    first = run_crop(ws, catalog, CropOptions.from_config(ws, size=128, batch_size=4, device="cpu", workers=2))
    assert first.workers == 2 and first.with_face == 11 and not first.failed
    stored = {Path(r[0]).name: r[1] for r in catalog.conn.execute(
        "SELECT s.location, i.path FROM images i JOIN sources s ON s.image_id = i.id")}
    ws.resolve(stored["copy0.jpg"]).write_bytes(b"")                          # fails the detector's decode
    data = ws.resolve(stored["copy1.jpg"]).read_bytes()
    ws.resolve(stored["copy1.jpg"]).write_bytes(data[: len(data) // 2])      # a truncated JPEG stream
    before = _faces_by_name(catalog)
    again = run_crop(ws, catalog, CropOptions.from_config(ws, size=128, batch_size=4, device="cpu", workers=2),
                     redo=True)
    assert again.images == 12 and again.with_face == 9
    assert sorted(f.item for f in again.failed) == sorted([stored["copy0.jpg"], stored["copy1.jpg"]])
    assert all("Its earlier faces are kept" in f.error for f in again.failed)
    after = _faces_by_name(catalog)
    for name in ("copy0.jpg", "copy1.jpg"):  # --redo: a failure never replaces the faces found before
        assert [r["bbox"] for r in after[name]] == [r["bbox"] for r in before[name]]
        assert Image.open(ws.resolve(after[name][0]["crop_path"])).size == (128, 128)
    # a new photo that fails is recorded as failed, naming the file; the rest of its batch is cropped
    fresh = init_workspace(tmp_path / "fresh")
    with Catalog.open(fresh.catalog_path) as fresh_catalog:
        import_paths(fresh, fresh_catalog, [folder])
        path = fresh_catalog.conn.execute("SELECT i.path FROM images i JOIN sources s ON s.image_id = i.id "
                                          "WHERE s.location LIKE '%copy2.jpg'").fetchone()[0]
        fresh.resolve(path).write_bytes(b"not an image")
        summary = run_crop(fresh, fresh_catalog, CropOptions.from_config(fresh, size=128, device="cpu", workers=2))
        assert summary.with_face == 10 and [f.item for f in summary.failed] == [path]
        state = fresh_catalog.conn.execute("SELECT crop_state, crop_error FROM images WHERE path = ?",
                                           (path,)).fetchone()
        assert state["crop_state"] == "failed" and path in state["crop_error"]


def test_a_crop_worker_killed_mid_batch_is_reported_with_its_photos_and_a_rerun_finishes(
        ws: Workspace, catalog: Catalog, demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A native crash in a crop worker breaks the pool and fails every pending batch at once, whichever it was
    the waited-for batch or one behind it: the message must name the crashed photo, batches committed before
    stay committed, and a re-run crops the rest."""
    from facecurate.errors import ImageError
    from facecurate.faces import crop_batch

    import_paths(ws, catalog, [_photo_folder(demo_dir, tmp_path / "photos", 12)])
    paths = sorted(r[0] for r in catalog.conn.execute("SELECT path FROM images"))  # crop's hash order
    real = crop_batch.CropWork.__call__
    for victim in (paths[0], paths[6]):  # in the first batch (the one waited for), or in a batch behind it
        def crash_on_victim(self, rows, victim=victim):  # runs in the forked worker
            if any(r.path == victim for r in rows):
                os._exit(139)
            return real(self, rows)

        monkeypatch.setattr(crop_batch.CropWork, "__call__", crash_on_victim)
        with pytest.raises(ImageError, match="crop worker died") as info:
            run_crop(ws, catalog, CropOptions.from_config(ws, size=128, batch_size=2, device="cpu", workers=2))
        assert victim in str(info.value)
        states = dict(catalog.conn.execute("SELECT path, crop_state FROM images").fetchall())
        assert states[victim] is None
    monkeypatch.setattr(crop_batch.CropWork, "__call__", real)
    again = run_crop(ws, catalog, CropOptions.from_config(ws, size=128, batch_size=2, device="cpu", workers=2))
    assert again.images >= 2 and not again.failed
    assert catalog.conn.execute("SELECT COUNT(*) FROM images WHERE crop_state IS NULL").fetchone()[0] == 0


def test_spawned_workers_crop_what_forked_workers_crop(ws: Workspace, catalog: Catalog, demo_dir: Path,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """macOS and Windows spawn their workers: the same stage, each worker holding a share of the pixel budget."""
    from facecurate.faces import crop_workers

    folder = _photo_folder(demo_dir, tmp_path / "photos", 10)
    import_paths(ws, catalog, [folder])
    forked = run_crop(ws, catalog, CropOptions.from_config(ws, size=128, device="cpu", workers=2))
    monkeypatch.setattr(crop_workers, "start_method", lambda threads=1: "spawn")
    assert crop_workers.shared_budget(100.0) is None
    other = init_workspace(tmp_path / "other")
    with Catalog.open(other.catalog_path) as other_catalog:
        import_paths(other, other_catalog, [folder])
        spawned = run_crop(other, other_catalog, CropOptions.from_config(other, size=128, device="cpu", workers=2))
        assert spawned.workers == forked.workers == 2 and spawned.faces == forked.faces == 9
        assert _results(other, other_catalog) == _results(ws, catalog)


def test_the_worker_count_follows_the_cores_and_the_setting():
    assert plan(0, 1000, cpus=1) == (0, 1)                    # one core: crop in this process
    assert plan(0, IN_PROCESS_UP_TO, cpus=16) == (0, 16)      # a handful of photos: no workers to start
    assert plan(0, 1000, cpus=2) == (2, 1)                    # a worker per core, each detecting on one thread
    assert plan(0, 1000, cpus=4) == (4, 1)
    assert plan(0, 1000, cpus=16) == (8, 2)                   # past four cores, two threads per worker
    assert plan(3, 5, cpus=2) == (3, 1)                       # asked for: always, at least one thread each
    assert plan(2, 1000, cpus=16) == (2, 8)


def test_faces_below_min_face_size_are_not_searched_for(ws: Workspace, catalog: Catalog, demo_dir: Path,
                                                        tmp_path: Path):
    """The default pyramid starts at 40 px faces (MTCNN still finds some down to about half that); a 15 px face
    is not found, and 20, MTCNN's own default, finds it. (A 1024 px frame: smaller photos with no face get the
    closer looks meant for tight crops.)"""
    small = Image.open(demo_dir / "obama.jpg").convert("RGB").resize((60, 75), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (1024, 1024), (128, 128, 128))
    canvas.paste(small, (260, 240))
    canvas.save(tmp_path / "far_away.jpg", quality=95)
    import_paths(ws, catalog, [tmp_path / "far_away.jpg"])
    default = run_crop(ws, catalog, CropOptions.from_config(ws, size=128, device="cpu"))
    assert CropOptions.from_config(ws).min_face_size == 40 and default.no_face == 1
    looked_closer = run_crop(ws, catalog, CropOptions.from_config(ws, size=128, device="cpu", min_face_size=20),
                             redo=True)
    assert looked_closer.faces == 1
    box = json.loads(catalog.conn.execute("SELECT bbox FROM faces").fetchone()[0])
    assert 10 <= box[2] - box[0] < 20 and 260 < (box[0] + box[2]) / 2 < 320


def test_progress_is_reported_as_plain_events(ws: Workspace, catalog: Catalog, demo_dir: Path):
    import_paths(ws, catalog, [demo_dir / "obama.jpg", demo_dir / "biden.jpg", demo_dir / "rocket_no_face.jpg"])
    events = RecordingProgress()
    run_crop(ws, catalog, CropOptions.from_config(ws, size=128, batch_size=2, device="cpu"), progress=events)
    assert events.events[0] == ("start", "crop (cpu)", 3, "img")
    assert sum(e[1] for e in events.events if e[0] == "advance") == 3
    assert events.events[-1] == ("finish",)


def test_options_come_from_the_settings_and_flags_are_checked(ws: Workspace):
    from facecurate.errors import ConfigError
    from facecurate.workspace import setting

    opts = CropOptions.from_config(ws)
    for name in CropOptions.__dataclass_fields__:
        assert getattr(opts, name) == setting("crop", name).default, name
    assert CropOptions.from_config(ws, device="cpu", size=None).device == "cpu"
    with pytest.raises(ConfigError, match="--device"):
        CropOptions.from_config(ws, device="gpu")
    with pytest.raises(ConfigError, match="--image-format"):
        CropOptions.from_config(ws, image_format="gif")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork is the Linux start method")
def test_workers_are_spawned_where_a_fork_would_inherit_torchs_thread_pool():
    """A forked child that enters an OpenMP region with more than one thread hangs once the parent has run
    torch (this test process has); on one thread torch never enters one, so fork stays the cheap choice."""
    import torch  # noqa: F401  (the parent has run torch)

    from facecurate.faces import crop_workers

    assert crop_workers.start_method(1) == "fork"
    assert crop_workers.start_method(2) == "spawn"


def test_a_run_is_batched_by_content_whatever_order_its_photos_arrived_in():
    """MTCNN's sums depend on a batch's canvas (~1e-5 px), so a batch must hold the same photos however a crawl
    ordered them; small runs get smaller batches so the last ones keep every worker busy."""
    import hashlib
    import random

    from facecurate.catalog import ImageRow
    from facecurate.faces.crop import crop_batches

    rows = [ImageRow(i, hashlib.sha256(str(i).encode()).hexdigest(), f"raw/{i}.jpg", "JPEG", 10, 10, 1, None, None)
            for i in range(100)]
    shuffled = random.Random(3).sample(rows, len(rows))
    batches = crop_batches(rows, 32)
    assert batches == crop_batches(shuffled, 32)
    assert [len(b) for b in batches] == [13] * 7 + [9]                       # 100 photos: 8 batches, not 32+32+32+4
    assert [r.sha256 for b in batches for r in b] == sorted(r.sha256 for r in rows)
    assert [len(b) for b in crop_batches(rows[:20], 32)] == [8, 8, 4]          # never below 8 a batch
    assert {len(b) for b in crop_batches(rows * 30, 32)[:-1]} == {32}         # large runs: batch_size
    assert [len(b) for b in crop_batches(rows[:20], 5)] == [5] * 4            # batch_size still caps it
