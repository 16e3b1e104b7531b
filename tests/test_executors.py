"""The executor seam: ``run --executor ray`` on a local Ray cluster gives the manifest ``local`` gives, resumes a
killed job without doing a committed batch twice, records a bad photo per item as the local path does, and
without the extra says how to install it.

One local cluster (``ray.init(num_cpus=2)``) serves the whole session. CI installs the extra (.ci/run), and a
Ray test there fails rather than skips when Ray is missing; a clone without the extra skips them cleanly.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from PIL import Image

from facecurate.catalog import Catalog
from facecurate.demo import DEMO_DATA, run_demo
from facecurate.errors import ConfigError
from facecurate.executors import RAY_MISSING, LocalExecutor, make_executor
from facecurate.faces.crop import CropOptions, run_crop
from facecurate.ingest import import_paths
from facecurate.pipeline import RunOptions, run_pipeline
from facecurate.result_arrow import value_results
from facecurate.workspace import Workspace, init_workspace
from tests.conftest import RecordingProgress, needs_dev

HAVE_RAY = importlib.util.find_spec("ray") is not None


def _set(ws: Workspace, section: str, key: str, value: str) -> None:
    """Rewrite one ``key = value`` line of the facecurate.toml ``init`` wrote (every setting has its line)."""
    lines = ws.config_path.read_text(encoding="utf-8").splitlines()
    start = lines.index(f"[{section}]")
    at = next(i for i in range(start, len(lines)) if lines[i].startswith(f"{key} = "))
    lines[at] = f"{key} = {value}"
    ws.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _needs_ray() -> None:
    if not HAVE_RAY:
        if os.environ.get("CI") == "true":
            pytest.fail("Ray is not installed in CI: .ci/run must `uv sync --extra ray` so these tests run.")
        pytest.skip("Ray is an optional extra (uv sync --extra ray); without it the ray executor is not tested")


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint: str) -> Iterator[str]:
    """A local two-CPU Ray cluster for the session; its address, for a driver in another process. Started after
    the loopback S3 server, so its workers inherit the AWS_* environment that points at it."""
    _needs_ray()
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # workers run this interpreter, not `uv run`
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield str(ray.get_runtime_context().gcs_address)
    ray.shutdown()


# -- the missing extra --------------------------------------------------------------------------------------


def test_without_ray_the_error_says_how_to_install_it_and_no_stage_runs(ws: Workspace, catalog: Catalog,
                                                                        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as without the extra
    with pytest.raises(ConfigError) as caught:
        make_executor(ws, "ray")
    assert str(caught.value) == RAY_MISSING
    assert "uv sync --extra ray" in RAY_MISSING and "facecurate[ray]" in RAY_MISSING
    import_paths(ws, catalog, [DEMO_DATA / "obama.jpg"])
    with pytest.raises(ConfigError, match="uv sync --extra ray"):
        run_pipeline(ws, catalog, RunOptions(stages=("dedup", "crop"), executor="ray"))
    assert catalog.conn.execute("SELECT COUNT(*) FROM images WHERE crop_state IS NOT NULL").fetchone()[0] == 0
    _set(ws, "run", "executor", '"ray"')
    with pytest.raises(ConfigError, match="uv sync --extra ray"):
        make_executor(ws)  # the setting, not only the flag
    assert isinstance(make_executor(ws, "local"), LocalExecutor)
    with pytest.raises(ConfigError, match="--executor"):
        run_pipeline(ws, catalog, RunOptions(executor="spark"))


# -- same answers ---------------------------------------------------------------------------------------------

VOLATILE = ("source_url", "page_url", "retrieved_at")  # a new loopback port and clock per run


def _normalised(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows by sample_id, without what differs between any two runs; dup_group (a catalog id, which follows the
    crawl's download order) becomes the sample_ids of its group, so groups are compared by membership."""
    members: dict[Any, list[str]] = {}
    for r in rows:
        if r.get("dup_group") is not None:
            members.setdefault(r["dup_group"], []).append(r["sample_id"])
    out = {}
    for r in rows:
        kept = {k: v for k, v in r.items() if k not in VOLATILE}
        if kept.get("dup_group") is not None:
            kept["dup_group"] = sorted(members[kept["dup_group"]])
        out[r["sample_id"]] = kept
    return out


def _differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Where two manifest values differ; floats within 1e-6 count as equal."""
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=0, abs_tol=1e-6):
            return []
        return [f"{where}: {a!r} != {b!r}"]
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in _differences(a.get(k), b.get(k), f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def _manifest(path: Path | None) -> list[dict[str, Any]]:
    assert path is not None
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_demo_gives_the_same_manifest_on_ray_as_locally(ray_cluster: str, tmp_path: Path):
    local = run_demo(tmp_path / "local", "cpu", executor="local")
    on_ray = run_demo(tmp_path / "ray", "cpu", executor="ray")
    assert local.run.ok and on_ray.run.ok, (local.run.error, on_ray.run.error)
    assert "on ray" in on_ray.run.stage("crop").detail
    a, b = _normalised(_manifest(local.run.manifest)), _normalised(_manifest(on_ray.run.manifest))
    assert len(a) == 20 and sorted(a) == sorted(b)
    assert {r["status"] for r in a.values()} >= {"keep", "reject", "duplicate", "no_face"}
    problems = [f"{sid}{d}" for sid in a for d in _differences(a[sid], b[sid])]
    assert not problems, "\n".join(problems)


def test_the_demo_on_ray_with_s3_storage_gives_the_local_manifest_and_keeps_bytes_off_the_driver(
        ray_cluster: str, tmp_path: Path, s3_bucket: str):
    """[run] storage = "s3://…": every stage's workers read and write the bucket (a real S3 API on loopback);
    the driver records hashes, not bytes, and fetches into its workspace only what its own readers need."""
    import fsspec

    url = f"{s3_bucket}/demo"
    ws = init_workspace(tmp_path / "s3")
    _set(ws, "run", "storage", f'"{url}"')
    local = run_demo(tmp_path / "local", "cpu", executor="local")
    on_ray = run_demo(ws.root, "cpu", executor="ray")
    assert local.run.ok and on_ray.run.ok, (local.run.error, on_ray.run.error)
    a, b = _normalised(_manifest(local.run.manifest)), _normalised(_manifest(on_ray.run.manifest))
    assert len(a) == 20 and sorted(a) == sorted(b)
    problems = [f"{sid}{d}" for sid in a for d in _differences(a[sid], b[sid])]
    assert not problems, "\n".join(problems)
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    bucket = url.removeprefix("s3://")
    stored = {k.removeprefix(bucket + "/") for k in fs.find(bucket)}
    with Catalog.open(ws.catalog_path) as catalog:
        raws = {r[0] for r in catalog.conn.execute("SELECT path FROM images")}
        crops = {r[0] for r in catalog.conn.execute("SELECT crop_path FROM faces")}
    assert raws and crops and stored == raws | crops  # every file in the bucket, nothing else (no temp keys)
    on_driver = {str(p.relative_to(ws.root)) for p in (ws.root / "raw").rglob("*") if p.is_file()}
    assert len(on_driver) < len(raws) // 2  # downloads never came back to the driver (dedup fetched a few twins)
    for rel in crops:  # the export's crops were mirrored into the workspace, byte for byte
        assert ws.resolve(rel).read_bytes() == fs.cat_file(f"{bucket}/{rel}")
    local_crops = {str(p.relative_to(local.workspace)) for p in (local.workspace / "crops").rglob("*.jpg")}
    assert local_crops == crops


def _same_stages(ws_root: Path, executor: str) -> list[dict[str, Any]]:
    ws = Workspace(ws_root)
    with Catalog.open(ws.catalog_path) as catalog:
        summary = run_pipeline(ws, catalog, RunOptions(stages=("dedup", "crop", "filter", "export"), device="cpu",
                                                       executor=executor))
        assert summary.ok, summary.error
        return _manifest(summary.manifest)


def test_a_few_hundred_dev_photos_give_the_same_manifest_on_ray(ray_cluster: str, tmp_path: Path):
    dev = needs_dev("")
    photos = sorted(p for p in dev.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[::4][:200]
    assert len(photos) >= 150
    first = init_workspace(tmp_path / "local")
    with Catalog.open(first.catalog_path) as catalog:
        imported = import_paths(first, catalog, photos)
    assert imported.new >= 150
    shutil.copytree(first.root, tmp_path / "ray")  # same catalog ids: nothing but the executor differs
    a = _normalised(_same_stages(first.root, "local"))
    b = _normalised(_same_stages(tmp_path / "ray", "ray"))
    assert sorted(a) == sorted(b) and len(a) >= 150
    problems = [f"{sid}{d}" for sid in a for d in _differences(a[sid], b[sid])]
    assert not problems, "\n".join(problems[:40])


# -- resumable, failures per item ------------------------------------------------------------------------------


def _photos(ws: Workspace, catalog: Catalog, tmp_path: Path, copies: int) -> int:
    """The bundled photos, each also re-encoded at ``copies - 1`` other JPEG qualities (new content each)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for src in sorted(DEMO_DATA.glob("*.jpg")):
        shutil.copy(src, folder / src.name)
        with Image.open(src) as im:
            for q in range(1, copies):
                im.convert("RGB").save(folder / f"{src.stem}_q{q}.jpg", quality=95 - 7 * q)
    return import_paths(ws, catalog, [folder]).new


def _crop_state(catalog: Catalog) -> dict[int, str | None]:
    return dict(catalog.conn.execute("SELECT id, crop_state FROM images").fetchall())


def test_a_killed_ray_job_resumes_without_doing_a_committed_batch_again(ray_cluster: str, ws: Workspace,
                                                                         catalog: Catalog, tmp_path: Path):
    n = _photos(ws, catalog, tmp_path, copies=3)
    assert n == 21
    _set(ws, "run", "executor", '"ray"')
    _set(ws, "run", "ray_address", f'"{ray_cluster}"')  # the driver joins the session's cluster as a Ray job
    _set(ws, "run", "ray_workers", "1")
    _set(ws, "crop", "batch_size", "1")
    proc = subprocess.Popen([sys.executable, "-m", "facecurate", "run", "--stages", "crop", "--device", "cpu",
                             "-w", str(ws.root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if sum(s is not None for s in _crop_state(catalog).values()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _crop_state(catalog)
    done_before = {i for i, s in before.items() if s is not None}
    assert 2 <= len(done_before) < n, "the kill should land mid-stage"
    faces_before = dict(catalog.conn.execute("SELECT id, image_id FROM faces").fetchall())

    executor = make_executor(ws)
    try:
        from facecurate.faces.crop_work import run_crop_with

        summary = run_crop_with(executor, ws, catalog, CropOptions.from_config(ws, device="cpu"))
    finally:
        executor.close()
    assert summary.images == n - len(done_before)  # only what was not committed
    after = _crop_state(catalog)
    assert all(s in ("done", "no_face") for s in after.values())
    assert {i: s for i, s in after.items() if i in done_before} == {i: before[i] for i in done_before}
    faces = dict(catalog.conn.execute("SELECT id, image_id FROM faces").fetchall())
    assert {f: i for f, i in faces.items() if i in done_before} == faces_before  # the same rows, not redone
    per_image = catalog.conn.execute("SELECT image_id, face_index, COUNT(*) FROM faces GROUP BY 1, 2").fetchall()
    assert all(count == 1 for _, _, count in per_image)
    files = sorted(p.relative_to(ws.root).as_posix() for p in ws.crops_dir.rglob("*.jpg"))
    assert files == sorted(r[0] for r in catalog.conn.execute("SELECT crop_path FROM faces"))
    left = [(p.name, p.stat().st_size) for p in ws.tmp_dir.rglob("*")] if ws.tmp_dir.exists() else []
    assert not left, left  # no half file left behind


def test_closing_the_ray_executor_sweeps_the_temp_files_its_killed_workers_left(ws: Workspace):
    """A worker of a killed job can outlive the next run's start, so its half file outlives the sweep the
    workspace does on opening; the executor sweeps again when it closes, and keeps a live writer's file."""
    _needs_ray()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    ws.tmp_dir.mkdir(exist_ok=True)
    dead = ws.tmp_dir / f".part-{gone.pid}-abc.jpg"
    alive = ws.tmp_dir / f".part-{os.getpid()}-def.jpg"
    dead.write_bytes(b"\xff\xd8 half a crop")
    alive.write_bytes(b"\xff\xd8 being written")
    executor = make_executor(ws, "ray")
    assert dead.exists()  # nothing is swept before the run's work is done
    executor.close()
    assert not dead.exists() and alive.exists()


def test_a_photo_that_fails_is_recorded_per_item_on_ray_as_locally(ray_cluster: str, tmp_path: Path):
    roots = []
    for name in ("local", "ray"):
        ws = init_workspace(tmp_path / name)
        with Catalog.open(ws.catalog_path) as catalog:
            import_paths(ws, catalog, [DEMO_DATA / "obama.jpg", DEMO_DATA / "biden.jpg"])
            broken = catalog.conn.execute("SELECT path FROM images ORDER BY id LIMIT 1").fetchone()[0]
        data = ws.resolve(broken).read_bytes()
        ws.resolve(broken).write_bytes(data[: len(data) // 3])  # truncated on disk after import
        roots.append(ws)
    outcomes = []
    for ws, executor_name in zip(roots, ("local", "ray"), strict=True):
        with Catalog.open(ws.catalog_path) as catalog:
            opts = CropOptions.from_config(ws, device="cpu")
            if executor_name == "local":
                summary = run_crop(ws, catalog, opts)
            else:
                executor = make_executor(ws, "ray")
                try:
                    from facecurate.faces.crop_work import run_crop_with

                    summary = run_crop_with(executor, ws, catalog, opts)
                finally:
                    executor.close()
            rows = catalog.conn.execute("SELECT path, crop_state, crop_error FROM images ORDER BY id").fetchall()
        outcomes.append(([tuple(r) for r in rows], [(f.item, f.error) for f in summary.failed], summary.faces))
    assert outcomes[0] == outcomes[1]
    rows, failed, faces = outcomes[1]
    assert [r[1] for r in rows] == ["failed", "done"] and rows[0][2] and faces == 1
    assert len(failed) == 1 and failed[0][0] == rows[0][0]


def test_the_local_executor_runs_batches_in_order_and_counts_them():
    class Double:
        name, gpus = "double", 0.0

        def __call__(self, batch: list[int], /) -> list[int]:
            return [2 * x for x in batch]

    executor = LocalExecutor()
    assert list(executor.map_batches(Double(), [[1, 2], [3]])) == [[2, 4], [6]]
    [line] = executor.throughput()
    assert (line.stage, line.node, line.items) == ("double", "local", 3)


def test_ray_workers_fail_loudly_and_keep_what_was_committed(ray_cluster: str, ws: Workspace):
    class Boom:
        name, gpus = "boom", 0.0
        results = value_results(pa.int64())

        def __call__(self, batch: list[int], /) -> list[int]:
            if 3 in batch:
                raise RuntimeError("a bug in a work function")
            return batch

    from facecurate.errors import FacecurateError

    executor = make_executor(ws, "ray")
    got = []
    with pytest.raises(FacecurateError, match="a bug in a work function"):
        for result in executor.map_batches(Boom(), [[1], [2], [3], [4]]):
            got.append(result)
    assert got in ([], [[1]], [[1], [2]])  # batches after the failing one are never handed out
    executor.close()


# -- downloads ----------------------------------------------------------------------------------------------------


def test_a_crawl_on_ray_downloads_host_by_host_and_records_what_local_records(ray_cluster: str, tmp_path: Path):
    from tests.fakeweb import FakeEngines, ImageHost, items_for, write_config

    hosts = [ImageHost(delay=0.05), ImageHost(delay=0.05)]
    seen: dict[str, set[tuple[Any, ...]]] = {}
    with hosts[0].server, hosts[1].server:
        items = [it for pair in zip(items_for(hosts[0], list(range(1, 11))), items_for(hosts[1], list(range(11, 21))),
                                    strict=True) for it in pair]
        items += items_for(hosts[0], [1], "fault/html") + items_for(hosts[1], [2], "fault/500-then-ok")
        with FakeEngines({"two hosts": items}).server as server:
            for name in ("local", "ray"):
                ws = init_workspace(tmp_path / name)
                write_config(ws.root, server.base, per_host=2)
                with Catalog.open(ws.catalog_path) as catalog:
                    from facecurate.crawl.queries import add_terms

                    add_terms(ws, catalog, "faces", ["two hosts"])
                    progress = RecordingProgress()
                    summary = run_pipeline(ws, catalog, RunOptions(stages=("crawl",), executor=name, limit=50),
                                           progress)
                    assert summary.ok, summary.error
                    notes = [e[1] for e in progress.events if e[0] == "note" and "ray · download" in e[1]]
                    assert bool(notes) == (name == "ray")  # the downloads ran on Ray workers, and said so
                    seen[name] = {tuple(r) for r in catalog.conn.execute(
                        "SELECT s.location, s.status, s.error, i.sha256 FROM sources s "
                        "LEFT JOIN images i ON i.id = s.image_id").fetchall()}
                    assert catalog.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 20
                if name == "local":
                    for h in hosts:
                        h.max_inflight = 0
    assert seen["local"] == seen["ray"] and len(seen["ray"]) == 22
    assert {s[1] for s in seen["ray"]} == {"ok", "failed"}
    assert all(h.max_inflight <= 2 for h in hosts)  # one worker per host, under its per_host cap
    assert all(h.max_inflight >= 1 for h in hosts)


def test_a_lost_worker_is_retried_by_ray_and_its_results_come_back_once(ray_cluster: str, ws: Workspace,
                                                                        tmp_path: Path):
    class DiesOnce:  # defined here so it pickles by value: Ray's workers need not import the tests
        """Work whose worker process dies (as with a lost node) the first time it meets ``fatal``."""

        name, gpus = "dies_once", 0.0
        results = value_results(pa.int64())

        def __init__(self, marker: str, fatal: int) -> None:
            self.marker, self.fatal = marker, fatal

        def __call__(self, batch: list[int], /) -> list[int]:
            if self.fatal in batch and not os.path.exists(self.marker):
                Path(self.marker).touch()
                time.sleep(0.5)  # the results before this batch have reached the driver
                os._exit(1)
            return [10 * x for x in batch]

    executor = make_executor(ws, "ray")
    try:
        batches = list(executor.map_batches(DiesOnce(str(tmp_path / "a"), 3), [[i] for i in range(6)]))
        assert batches == [[0], [10], [20], [30], [40], [50]] and (tmp_path / "a").exists()
        # mid-group: [30] was already handed back when the worker died on 4; the retried task does not repeat it
        groups = list(executor.map_groups(DiesOnce(str(tmp_path / "b"), 4), [[[1], [2]], [[3], [4]], [[5]]]))
        assert sorted(groups) == [[10], [20], [30], [40], [50]] and (tmp_path / "b").exists()
    finally:
        executor.close()


# -- typed results ------------------------------------------------------------------------------------------------


def _close(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two results differ: floats beyond 1e-6 (two processes' MTCNN sums), anything else at all."""
    import dataclasses

    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return [d for f in dataclasses.fields(a) for d in _close(getattr(a, f.name), getattr(b, f.name),
                                                                   f"{path}.{f.name}")]
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return [f"{path}: keys {list(a)} != {list(b)}"]
        return [d for k in a for d in _close(a[k], b[k], f"{path}[{k!r}]")]
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and type(a) is type(b):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _close(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float):
        same = (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=0, abs_tol=1e-6)
        return [] if same else [f"{path}: {a!r} != {b!r}"]
    return [] if a == b and type(a) is type(b) else [f"{path}: {a!r} != {b!r}"]


def test_ray_results_come_back_as_arrow_tables_of_each_works_declared_schema(ray_cluster: str, ws: Workspace,
                                                                               catalog: Catalog, tmp_path: Path):
    """Fingerprinting, crop and filter on Ray workers: each batch's results reach the driver as an Arrow table
    of the schema the work declares (typed columns, no pickled blob), a row per item, and read back they equal
    what the same work gives in this process, a failed photo included."""
    from facecurate.dedup.stage import FingerprintWork, _Job
    from facecurate.executors.ray import RayExecutor
    from facecurate.faces.crop_batch import CropWork
    from facecurate.rules.filter_work import MeasureWork, ToMeasure

    _photos(ws, catalog, tmp_path, copies=1)
    rows = catalog.images_to_crop()
    broken = ws.resolve(rows[0].path)
    broken.write_bytes(broken.read_bytes()[:500])  # truncated on disk: a per-item failure, not a lost batch
    cfg = ws.config()
    max_pixels, max_bytes = int(cfg.get("media", "max_pixels")), int(cfg.get("media", "max_bytes"))
    opts = CropOptions.from_config(ws, device="cpu")
    fingerprint = FingerprintWork(_Job(str(ws.root), "phash/test", "phash", 0.8, max_pixels, max_bytes))
    crop = CropWork(str(ws.root), opts, max_pixels, max_bytes, float(cfg.get("media", "decode_budget")))
    executor = RayExecutor(address=ray_cluster, workers=2)
    try:
        for work, batches in ((fingerprint, [[(r.path, r.sha256) for r in rows[i:i + 3]] for i in range(0, 7, 3)]),
                              (crop, [rows[i:i + 3] for i in range(0, 7, 3)])):
            tables = list(executor.arrow_batches(work, batches))
            assert [t.num_rows for t in tables] == [len(b) for b in batches]
            for table, batch in zip(tables, batches, strict=True):
                assert isinstance(table, pa.Table) and table.schema.equals(work.results.schema)
                assert "result" not in table.column_names and "_batch" not in table.column_names
                got = work.results.from_arrow(table)
                here = work(batch)
                if work is fingerprint:  # the time each file was hashed is the one field allowed to differ
                    got, here = [r._replace(hashed_at="") for r in got], [r._replace(hashed_at="") for r in here]
                problems = [d for g, h in zip(got, here, strict=True) for d in _close(g, h)]
                assert not problems, "\n".join(problems)
            if work is crop:
                first = crop.results.from_arrow(tables[0])[0]
                assert first.faces is None and first.error and first.reason  # the truncated photo, per item
                assert pa.types.is_struct(tables[0].schema.field("faces").type.value_type)
        # filter measures the faces this process's crop recorded
        run_crop(ws, catalog, opts)
        faces = catalog.faces_to_filter()
        assert len(faces) >= 4
        families = frozenset({"geometry", "pixels", "eyes"})
        measure = MeasureWork(str(ws.root), float(cfg.get("crop", "min_prob")), max_pixels, max_bytes)
        batches = [[ToMeasure(f, families) for f in faces[i:i + 2]] for i in range(0, len(faces), 2)]
        tables = list(executor.arrow_batches(measure, batches))
        assert all(t.schema.equals(measure.results.schema) for t in tables)
        assert tables[0].schema.field("scores").type == pa.map_(pa.string(), pa.float64())
        got = [m for t in tables for m in measure.results.from_arrow(t)]
        here = [m for b in batches for m in measure(b)]
        assert all(len(m.scores) > 5 for m in got)
        problems = [d for g, h in zip(got, here, strict=True) for d in _close(g, h)]
        assert not problems, "\n".join(problems)
    finally:
        executor.close()


def test_ray_download_groups_come_back_as_arrow_tables_of_the_declared_schema(ray_cluster: str, ws: Workspace):
    """A host's batches (Ray tasks, Arrow IPC streams): typed rows that say which URL each is, the file's bytes
    in their binary column, failures with their reason codes."""
    from facecurate.catalog import DownloadRow
    from facecurate.crawl.download_work import RESULT_SCHEMA, DownloadWork
    from facecurate.crawl.http import HttpSettings
    from facecurate.executors.ray import RayExecutor
    from facecurate.media import sha256_bytes
    from facecurate.storage import raw_relpath
    from tests.fakeweb import ImageHost, write_config

    write_config(ws.root)
    host = ImageHost()
    with host.server:
        urls = [host.server.url(f"/img/{n}.jpg") for n in (1, 2, 3)] + [host.server.url("/fault/html/4.jpg")]
        rows = [DownloadRow(i, u, i, None, f"photo {i} ✓", None, None, "bing", "query ☃", "faces")
                for i, u in enumerate(urls, start=100)]
        cfg = ws.config()
        work = DownloadWork(str(ws.root), HttpSettings.from_config(ws), [], {}, int(cfg.get("media", "max_pixels")),
                            int(cfg.get("media", "min_side")), float(cfg.get("media", "decode_budget")))
        executor = RayExecutor(address=ray_cluster, workers=2)
        try:
            tables = list(executor.arrow_groups(work, [[rows[:2], rows[2:3]], [rows[3:]]]))
        finally:
            executor.close()
    assert sorted(t.num_rows for t in tables) == [1, 1, 2]
    assert all(t.schema.equals(RESULT_SCHEMA) for t in tables)
    done = {d.row.url_id: d for t in tables for d in work.results.from_arrow(t)}
    assert {i: d.row for i, d in done.items()} == {r.url_id: r for r in rows}  # each row says which URL it is
    for i in (100, 101, 102):
        d = done[i]
        assert d.ok and d.data is None and d.width > 0 and d.fetched.status == 200  # the bytes stay in storage
        written = ws.resolve(raw_relpath(d.sha256 or "", d.ext or "bin")).read_bytes()  # the worker wrote them
        assert d.sha256 == sha256_bytes(written) and d.size == len(written)
    assert done[103].reason and not done[103].ok and done[103].data is None


def test_ray_keeps_empty_batches_in_place_and_refuses_results_off_their_declared_schema(ray_cluster: str,
                                                                                         ws: Workspace):
    from facecurate.errors import FacecurateError
    from facecurate.work import ArrowResults

    class Square:  # defined here so it pickles by value
        name, gpus = "square", 0.0
        results = value_results(pa.int64())

        def __call__(self, batch: list[int], /) -> list[int]:
            return [x * x for x in batch]

    class Narrow(Square):
        """Declares int64 and sends int32: a worker's table that is not what its work declared."""

        name = "narrow"
        results = ArrowResults(pa.schema([("value", pa.int64())]),
                               lambda rs: pa.table({"value": pa.array(rs, pa.int32())}),
                               lambda t: t.column("value").to_pylist())

    batches = [[], [1, 2], [], [], [3], [2**31, -(2**31)], []]
    want = list(LocalExecutor().map_batches(Square(), batches))
    executor = make_executor(ws, "ray")
    try:
        assert list(executor.map_batches(Square(), batches)) == want == [[], [1, 4], [], [], [9], [2**62, 2**62], []]
        tables = list(executor.arrow_batches(Square(), batches))  # type: ignore[attr-defined]
        assert [t.schema for t in tables] == [pa.schema([("value", pa.int64())])] * len(batches)
        assert list(executor.map_batches(Square(), [[], []])) == [[], []]
        groups = list(executor.map_groups(Square(), [[[1], [2, 3]], [[4]]]))
        assert sorted(groups) == [[1], [4, 9], [16]]
        with pytest.raises(FacecurateError, match="declared schema"):
            list(executor.map_batches(Narrow(), [[1], [2]]))
        with pytest.raises(FacecurateError, match="declared schema"):
            list(executor.map_groups(Narrow(), [[[1]]]))
    finally:
        executor.close()


def test_stage_commands_run_where_run_executor_says_and_agree_with_local(ray_cluster: str, tmp_path: Path):
    """`facecurate crop` and `filter` on their own honour [run] executor = "ray" (and --executor local
    overrides it): the crops are cut on the cluster and the faces, scores and verdicts equal the local ones."""
    faces = {}
    for name, flag in (("ray", []), ("local", ["--executor", "local"])):
        ws = init_workspace(tmp_path / name)
        with Catalog.open(ws.catalog_path) as catalog:
            import_paths(ws, catalog, [DEMO_DATA])
        _set(ws, "run", "executor", '"ray"')
        _set(ws, "run", "ray_address", f'"{ray_cluster}"')
        for stage in ("crop", "filter"):
            cmd = [sys.executable, "-m", "facecurate", stage, "-w", str(ws.root), "--json", *flag]
            done = subprocess.run(cmd + (["--device", "cpu"] if stage == "crop" else []), capture_output=True,
                                  text=True, timeout=600)
            assert done.returncode == 0, done.stderr
            if stage == "crop":
                device = json.loads(done.stdout)["device"]
                assert device == ("cpu on ray" if name == "ray" else "cpu"), device
        with Catalog.open(ws.catalog_path) as catalog:
            faces[name] = {r[0]: (json.loads(r[1]), json.loads(r[2]), r[3]) for r in catalog.conn.execute(
                "SELECT i.sha256, f.bbox, f.scores, f.reasons FROM faces f JOIN images i ON i.id = f.image_id")}
    assert faces["ray"].keys() == faces["local"].keys() and len(faces["ray"]) >= 5
    for sha, (box, scores, reasons) in faces["local"].items():
        other_box, other_scores, other_reasons = faces["ray"][sha]
        assert max(abs(a - b) for a, b in zip(box, other_box, strict=True)) <= 1e-6
        assert scores.keys() == other_scores.keys() and len(scores) > 5 and reasons == other_reasons
        assert not _differences(scores, other_scores)
