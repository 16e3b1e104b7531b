"""[run] storage: content-addressed files in the workspace, a shared folder, or object storage (a real S3 API on
loopback: moto's server), written atomically and once, and mirrored into the workspace for the driver's readers.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from facecurate import media
from facecurate.catalog import Catalog
from facecurate.errors import ConfigError, ImageError
from facecurate.filestore import (
    FsspecStore,
    LocalStore,
    MirrorStore,
    forget_mirrored,
    local_file,
    mirror_files,
    open_at,
    open_store,
)
from facecurate.ingest import import_paths
from facecurate.storage import raw_relpath
from facecurate.workspace import Workspace, init_workspace
from tests.s3server import StallingProxy

REPO = Path(__file__).resolve().parents[1]


def _set_storage(ws: Workspace, value: str) -> None:
    text = ws.config_path.read_text(encoding="utf-8")
    assert '\nstorage = ""\n' in text  # init writes every setting's line, defaults included
    ws.config_path.write_text(text.replace('\nstorage = ""\n', f"\nstorage = {value!r}\n".replace("'", '"')),
                              encoding="utf-8")


# -- the setting ---------------------------------------------------------------------------------------------


def test_the_default_is_the_workspace_itself_and_never_imports_fsspec(tmp_path: Path):
    ws = init_workspace(tmp_path / "ws")
    store = open_store(ws)
    assert isinstance(store, LocalStore) and store.root == ws.root
    script = textwrap.dedent(f"""
        import sys
        from facecurate.workspace import Workspace
        from facecurate.filestore import open_store
        from facecurate.storage import put_raw
        store = open_store(Workspace(__import__("pathlib").Path({str(ws.root)!r})))
        put_raw(store, b"abc", "ab" * 32, "jpg")
        assert store.read("raw/ab/" + "ab" * 32 + ".jpg", 10) == b"abc"
        print("fsspec" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("value", ["relative/folder", "s3:/one-slash", "://nothing"])
def test_a_storage_that_is_neither_a_path_nor_a_url_stops_before_any_stage(tmp_path: Path, value: str):
    ws = init_workspace(tmp_path / "ws")
    _set_storage(ws, value)
    with pytest.raises(ConfigError, match=r"\[run\] storage .* is not empty, an absolute path, or a URL"):
        ws.config()


def test_a_shared_folder_holds_the_files_and_the_workspace_mirrors_them(tmp_path: Path, demo_dir: Path):
    shared = tmp_path / "shared-mount"
    ws = init_workspace(tmp_path / "ws")
    _set_storage(ws, str(shared))
    with Catalog.open(ws.catalog_path) as catalog:
        import_paths(ws, catalog, [demo_dir / "obama.jpg"])
        row = catalog.conn.execute("SELECT path, sha256 FROM images").fetchone()
    original = (demo_dir / "obama.jpg").read_bytes()
    assert (shared / row[0]).read_bytes() == original  # written through to the storage…
    assert ws.resolve(row[0]).read_bytes() == original  # …and to the workspace's mirror
    ws.resolve(row[0]).unlink()  # a mirror that lacks a file fetches it on first use
    assert local_file(ws, row[0], 10**8).read_bytes() == original
    worker = open_at(ws.root, str(shared))  # what a worker on another node opens
    assert isinstance(worker, LocalStore) and worker.read(row[0], 10**8) == original


# -- local files: atomic, once ----------------------------------------------------------------------------


def test_a_local_write_that_fails_midway_leaves_neither_the_file_nor_a_temp(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch):
    store = LocalStore(tmp_path / "files", tmp_path / "files" / ".tmp")
    store.write("crops/512/ab/x_0.jpg", b"first")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # the disk fails after the bytes went to the temp file
    with pytest.raises(OSError, match="No space"):
        store.write("crops/512/ab/x_0.jpg", b"second, never whole")
    with pytest.raises(OSError):
        store.write("raw/cd/y.jpg", b"new")
    monkeypatch.undo()
    assert store.read("crops/512/ab/x_0.jpg", 100) == b"first"  # the old file, untouched
    assert not store.exists("raw/cd/y.jpg")
    assert list((tmp_path / "files" / ".tmp").iterdir()) == []


def test_content_addressed_writes_are_once_and_crops_are_replaced(tmp_path: Path):
    store = LocalStore(tmp_path, tmp_path / ".tmp")
    store.write("raw/ab/x.jpg", b"one", once=True)
    store.write("raw/ab/x.jpg", b"two", once=True)
    store.write("crops/512/ab/x_0.jpg", b"cut one")
    before = store.stamp("crops/512/ab/x_0.jpg")
    store.write("crops/512/ab/x_0.jpg", b"cut again")
    assert store.read("raw/ab/x.jpg", 10) == b"one"
    assert store.read("crops/512/ab/x_0.jpg", 100) == b"cut again"
    assert store.stamp("crops/512/ab/x_0.jpg") != before and store.stamp("crops/nothing.jpg") is None


def test_a_file_url_writes_through_a_temp_key_and_a_rename(tmp_path: Path):
    """fsspec file systems that are not object stores get the local files' discipline: temp key, then rename."""
    store = open_at("/unused", f"file://{tmp_path}/files")
    assert isinstance(store, FsspecStore)
    store.write("raw/ab/x.jpg", b"one", once=True)
    store.write("raw/ab/x.jpg", b"two", once=True)
    store.write("crops/512/ab/x_0.jpg", b"cut")
    assert store.read("raw/ab/x.jpg", 10) == b"one" and (tmp_path / "files/crops/512/ab/x_0.jpg").read_bytes() == b"cut"
    left = sorted(str(p.relative_to(tmp_path / "files")) for p in (tmp_path / "files").rglob("*") if p.is_file())
    assert left == ["crops/512/ab/x_0.jpg", "raw/ab/x.jpg"]  # no temp key stays behind


# -- object storage (S3 over loopback) ------------------------------------------------------------------------


def test_s3_round_trip_once_limits_and_missing(s3_bucket: str):
    store = FsspecStore(f"{s3_bucket}/run-1")
    data = os.urandom(300_000)
    sha = hashlib.sha256(data).hexdigest()
    rel = raw_relpath(sha, "jpg")
    assert not store.exists(rel) and store.stamp(rel) is None
    store.write(rel, data, once=True)
    store.write(rel, b"other bytes under the same hash", once=True)  # never rewritten
    assert store.exists(rel) and store.read(rel, len(data)) == data
    assert store.stamp(rel) == f"{len(data)}:{hashlib.md5(data).hexdigest()}"  # size and ETag
    with pytest.raises(ImageError) as big:
        store.read(rel, len(data) - 1)
    assert big.value.reason == "too_large"
    with pytest.raises(ImageError) as gone:
        store.read("raw/00/none.jpg", 10)
    assert gone.value.reason == "missing"
    crop = "crops/512/ab/x_0.jpg"
    store.write(crop, b"cut one")
    first = store.stamp(crop)
    store.write(crop, b"cut again, longer")
    assert store.read(crop, 100) == b"cut again, longer" and store.stamp(crop) != first
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    keys = sorted(fs.find(s3_bucket.removeprefix("s3://")))
    assert keys == sorted(f"{s3_bucket.removeprefix('s3://')}/run-1/{k}" for k in (rel, crop))  # no temp keys


def test_an_s3_upload_killed_midway_leaves_no_object(s3_bucket: str, s3_endpoint: str):
    """A writer killed (kill -9) with half its PUT sent: the object does not exist, whole or partial; a new
    write of the same key then succeeds."""
    url, rel = f"{s3_bucket}/killed", "raw/ab/" + "ab" * 32 + ".jpg"
    data = os.urandom(8 << 20)
    proxy = StallingProxy(s3_endpoint, limit=1 << 20)
    script = textwrap.dedent(f"""
        import os
        from facecurate.filestore import FsspecStore
        FsspecStore({url!r}).write({rel!r}, os.urandom(8 << 20), once=True)
        print("finished")
    """)
    writer = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env={**os.environ, "AWS_ENDPOINT_URL_S3": proxy.endpoint})
    try:
        assert proxy.stalled.wait(120), writer.communicate(timeout=5)
        assert writer.poll() is None  # mid-upload: 1 MiB of 8 MiB reached the server
        writer.send_signal(signal.SIGKILL)
        out, _ = writer.communicate(timeout=30)
    finally:
        proxy.close()
    assert writer.returncode == -signal.SIGKILL and b"finished" not in out
    assert proxy.forwarded >= 1 << 20
    store = FsspecStore(url)
    assert not store.exists(rel)
    import fsspec

    assert fsspec.filesystem("s3", skip_instance_cache=True).find(s3_bucket.removeprefix("s3://")) == []
    store.write(rel, data, once=True)
    assert store.read(rel, len(data)) == data


def test_the_driver_mirrors_what_workers_wrote_to_s3(tmp_path: Path, s3_bucket: str, demo_dir: Path):
    ws = init_workspace(tmp_path / "ws")
    url = f"{s3_bucket}/ws"
    _set_storage(ws, url)
    store = open_store(ws)
    assert isinstance(store, MirrorStore)
    worker = open_at("/nowhere/the/driver/has", url)  # a worker on another node: storage only
    photo = (demo_dir / "obama.jpg").read_bytes()
    rel = raw_relpath(media.sha256_bytes(photo), "jpg")
    worker.write(rel, photo, once=True)
    worker.write("crops/512/ab/c_0.jpg", b"crop bytes")
    assert not ws.resolve(rel).exists()
    assert store.read(rel, 10**8) == photo and ws.resolve(rel).read_bytes() == photo  # fetched on first read
    assert local_file(ws, "crops/512/ab/c_0.jpg", 100).read_bytes() == b"crop bytes"
    assert mirror_files(ws, [rel, "crops/512/ab/c_0.jpg", "crops/512/ab/missing_0.jpg"], 10**8) == 0  # all there
    store.write("crops/512/cd/d_0.jpg", b"cut locally")  # a local stage's write reaches the workers too
    assert worker.read("crops/512/cd/d_0.jpg", 100) == b"cut locally"
    ws.resolve("crops/512/cd/d_0.jpg").unlink()
    assert mirror_files(ws, ["crops/512/cd/d_0.jpg"], 100) == 1
    assert ws.resolve("crops/512/cd/d_0.jpg").read_bytes() == b"cut locally"
    worker.write("crops/512/ab/c_0.jpg", b"cut again by a worker (crop --redo)")
    assert local_file(ws, "crops/512/ab/c_0.jpg", 100).read_bytes() == b"crop bytes"  # the mirror is stale…
    forget_mirrored(ws, ["crops/512/ab/c_0.jpg"])  # …until the driver records the new cut
    assert local_file(ws, "crops/512/ab/c_0.jpg", 100).read_bytes() == b"cut again by a worker (crop --redo)"


def test_the_local_executor_with_s3_storage_writes_through_and_the_bucket_matches_the_catalog(tmp_path: Path,
                                                                                             s3_bucket: str):
    """Local stages (a crawl whose forked finishing processes write the downloads, crop's workers) write every
    file to the bucket and to the workspace's mirror, so a later Ray stage finds them where its workers look."""
    import fsspec

    from facecurate.demo import run_demo

    url = f"{s3_bucket}/local"
    ws = init_workspace(tmp_path / "ws")
    _set_storage(ws, url)
    result = run_demo(ws.root, "cpu", executor="local")
    assert result.run.ok, result.run.error
    with Catalog.open(ws.catalog_path) as catalog:
        files = {r[0] for r in catalog.conn.execute("SELECT path FROM images UNION SELECT crop_path FROM faces")}
    bucket = url.removeprefix("s3://")
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    stored = {k.removeprefix(bucket + "/") for k in fs.find(bucket)}
    assert len(files) > 30 and stored == files
    for rel in sorted(files)[::5]:
        assert ws.resolve(rel).read_bytes() == fs.cat_file(f"{bucket}/{rel}")
