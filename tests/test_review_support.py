"""Shared helpers for the review tests (no tests here): a cropped demo workspace with rule verdicts set the way
the filter stage writes them (scores, reasons, filtered_at: a face with reasons is a reject), the gallery served
on a loopback port, and a headless Chromium from Debian.

The demo photos are cropped once per test session (MTCNN on the CPU takes a while); each test gets its own
copy of that workspace, so decisions never leak between tests.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from facecurate.catalog import Catalog, utc_now
from facecurate.demo import DEMO_DATA
from facecurate.faces.crop import CropOptions, run_crop
from facecurate.ingest import import_paths
from facecurate.workspace import Workspace, init_workspace

XSS = "<img src=x onerror=alert(1)>"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")

# What the rules stage would have written, by source photo: (reasons, scores, extra source fields); no reason
# means the rules keep it. Score keys are the registry's measures: ear_mean (closed_eyes, fires below),
# mirroring (fires above), headroom_iod (no_headroom, fires below).
VERDICTS: dict[str, tuple[list[str], dict[str, float], dict[str, Any]]] = {
    "obama_partial_face.jpg": (["mirroring", "no_headroom"],
                               {"ear_mean": 0.30, "mirroring": 0.31, "headroom_iod": 0.10},
                               {"title": XSS, "query": "obama", "engine": "bing",
                                "page_url": "https://example.org/page?id=1", "license": "CC BY 4.0",
                                "author": "<b>Jane</b>"}),
    "biden.jpg": (["mirroring"], {"ear_mean": 0.28, "mirroring": 0.12, "headroom_iod": 0.9},
                  {"title": "Joe Biden", "query": "biden", "engine": "bing", "page_url": "javascript:alert(2)"}),
    "obama3.jpg": (["closed_eyes"], {"ear_mean": 0.12, "mirroring": 0.0, "headroom_iod": 1.4},
                   {"query": "obama", "engine": "duckduckgo"}),
    "obama.jpg": ([], {"ear_mean": 0.29, "mirroring": 0.0, "headroom_iod": 1.2}, {"query": "obama"}),
    "obama2.jpg": ([], {"ear_mean": 0.31, "mirroring": 0.01, "headroom_iod": 1.1}, {}),
    "astronaut.jpg": ([], {"ear_mean": 0.33, "mirroring": 0.0, "headroom_iod": 1.0}, {}),
}

_TEMPLATE: dict[str, Path] = {}


def cropped_template(factory: pytest.TempPathFactory) -> Path:
    """The demo photos imported and cropped once per session (the copy source for every test)."""
    if "ws" not in _TEMPLATE:
        ws = init_workspace(factory.mktemp("review-template") / "ws")
        with Catalog.open(ws.catalog_path) as catalog:
            import_paths(ws, catalog, [DEMO_DATA], label="demo")
            run_crop(ws, catalog, CropOptions.from_config(ws, size=256, batch_size=8, device="cpu"))
        _TEMPLATE["ws"] = ws.root
    return _TEMPLATE["ws"]


def faces_by_name(catalog: Catalog) -> dict[str, Any]:
    """Source file name → its face row (the demo photos have one face each)."""
    return {Path(r["location"]).name: r for r in catalog.conn.execute(
        "SELECT f.*, s.location FROM faces f JOIN sources s ON s.image_id = f.image_id")}


def image_id_of(catalog: Catalog, name: str) -> int:
    return int(catalog.conn.execute("SELECT image_id FROM sources WHERE location LIKE ?", (f"%/{name}",))
               .fetchone()[0])


def reviewed_workspace(factory: pytest.TempPathFactory, dest: Path) -> Workspace:
    """A fresh copy of the cropped demo workspace with rule verdicts and provenance set (the data contract)."""
    shutil.copytree(cropped_template(factory), dest)
    ws = Workspace(dest)
    _set_reviewer(ws)
    with Catalog.open(ws.catalog_path) as catalog, catalog.transaction():
        for name, face in faces_by_name(catalog).items():
            reasons, scores, source = VERDICTS[name]
            catalog.conn.execute("UPDATE faces SET reasons=?, scores=?, filtered_at=? WHERE id=?",
                                 (json.dumps(reasons), json.dumps(scores), utc_now(), face["id"]))
            for key, value in source.items():
                catalog.conn.execute(f"UPDATE sources SET {key}=? WHERE image_id=?", (value, face["image_id"]))
    return ws


def _set_reviewer(ws: Workspace) -> None:
    """reviewer = "tester" under [review] in facecurate.toml, whatever init wrote there."""
    lines = ws.config_path.read_text(encoding="utf-8").splitlines()
    out, section = [], None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        if section == "[review]" and stripped.startswith("reviewer"):
            continue
        out.append(line)
        if stripped == "[review]":
            out.append('reviewer = "tester"')
    if "[review]" not in lines:
        out += ["", "[review]", 'reviewer = "tester"']
    ws.config_path.write_text("\n".join(out) + "\n", encoding="utf-8")


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """The app on 127.0.0.1, a free port, in a thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def require_chromium() -> None:
    """Debian's chromium + chromedriver, or a clear skip (a failure under CI, which installs them)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        message = (f"{', '.join(missing)} missing: install Debian's chromium and chromium-driver "
                   f"(apt-get install chromium chromium-driver) to run the browser tests")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def chromium(width: int = 1400, height: int = 900, logs: bool = False) -> Iterator[Any]:
    """Headless Chromium via an explicit chromedriver path, so Selenium Manager never downloads anything.
    ``logs``: keep the browser console and the performance (network) log, read with ``driver.get_log``."""
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="fc-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    if logs:
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
