"""``facecurate demo``: the whole pipeline offline, from keyword queries to an exported dataset.

A loopback search engine in Bing's response shape (:mod:`facecurate.demo_engine`) serves the bundled
public-domain photos and edits generated from them at demo time (:mod:`facecurate.demo_variants`), each made
to trip one reason. The demo then does what a user does — ``init``, ``queries add``, ``run`` — with the real
code: the tracked queries, the ``bing`` engine and downloader pointed at the loopback server through the
workspace's ``[engines.bing] base_url``, and :func:`facecurate.pipeline.run_pipeline` for crawl → dedup →
crop → filter → export, so the closing summary is the one ``run`` prints. Nothing is downloaded from the
internet; the MTCNN and FaceMesh weights ship inside their wheels.
"""

from __future__ import annotations

import io
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from facecurate import demo_variants as v
from facecurate.catalog import Catalog
from facecurate.crawl.queries import add_terms
from facecurate.demo_engine import DemoEngine, Listing
from facecurate.errors import FacecurateError
from facecurate.events import SILENT, Progress
from facecurate.export import manifest_rows
from facecurate.pipeline import RunOptions, RunSummary, run_pipeline
from facecurate.workspace import Workspace, init_workspace

DEMO_DATA = Path(__file__).parent / "demo_data"

# The demo's keyword lists: two labels (domains), one search term each, as `queries add` would track them.
QUERIES: dict[str, str] = {"official": "official portrait", "press": "press photo"}

# MTCNN's five points (eyes, nose, mouth corners) on the bundled photos, measured once with the crop stage's
# detector: the photos never change, and the edits only need to know where the eyes and mouth are. Saves
# loading the detector twice; tests/test_demo.py checks them against the crop stage's own detections.
LANDMARKS: dict[str, tuple[tuple[float, float], ...]] = {
    "obama.jpg": ((443.6, 215.6), (551.8, 212.5), (497.7, 279.7), (438.8, 320.9), (555.8, 317.6)),
    "obama2.jpg": ((250.7, 366.9), (373.9, 381.1), (287.5, 445.2), (248.3, 517.5), (351.4, 525.7)),
    "obama3.jpg": ((738.0, 384.6), (860.3, 399.6), (810.3, 441.7), (735.9, 510.7), (846.4, 527.3)),
    "biden.jpg": ((536.3, 320.6), (655.4, 348.6), (596.1, 410.7), (517.0, 467.4), (623.5, 486.4)),
}

Photos = dict[str, tuple[np.ndarray, np.ndarray]]  # bundled file name -> (pixels, landmarks)


@dataclass(frozen=True)
class DemoPhoto:
    """One photo the demo engine lists: where it comes from and what it is there to show."""

    name: str                                   # served file name
    label: str                                  # whose search finds it (a key of QUERIES)
    shows: str                                  # the status or reason it is made to raise ('keep' for none)
    how: str                                    # how it was made: the search result title
    make: Callable[[Photos], np.ndarray] | None = None  # None: the bundled file, served byte for byte
    quality: int = 92                           # JPEG quality of a generated photo


def _p(name: str) -> Callable[[Photos], tuple[np.ndarray, np.ndarray]]:
    return lambda photos: photos[name]


def _backdrop(name: str, top: tuple[int, int, int], bottom: tuple[int, int, int]
              ) -> Callable[[Photos], tuple[np.ndarray, np.ndarray]]:
    """The sitting on its own studio backdrop: a different photo to dedup, so the edit on it stands alone."""
    return lambda photos: (v.new_backdrop(*photos[name], top, bottom), photos[name][1])


OBAMA, OBAMA3, BIDEN = _p("obama.jpg"), _p("obama3.jpg"), _p("biden.jpg")

# Each edit starts from a sitting no other served photo shares at the face level (a cut, a turn, or its own
# studio backdrop), so dedup groups only the copies meant as copies and every other reason shows plainly.
DEMO_PHOTOS: tuple[DemoPhoto, ...] = (
    DemoPhoto("obama.jpg", "official", "keep", "bundled portrait"),
    DemoPhoto("obama3.jpg", "official", "keep", "bundled portrait"),
    DemoPhoto("obama_recompressed.jpg", "official", "duplicate", "obama.jpg at 90% size, JPEG q30",
              lambda ps: v.recompressed(OBAMA(ps)[0]), quality=30),
    DemoPhoto("closed_eyes.jpg", "official", "closed_eyes", "obama3.jpg on slate, both lids painted shut",
              lambda ps: v.closed_eyes(*_backdrop("obama3.jpg", (30, 35, 50), (200, 205, 215))(ps))),
    DemoPhoto("wink.jpg", "official", "wink", "obama2.jpg on lilac, one lid painted shut",
              lambda ps: v.wink(*_backdrop("obama2.jpg", (60, 40, 70), (225, 215, 230))(ps))),
    DemoPhoto("sunglasses.jpg", "official", "occluded_eyes", "biden.jpg on blue, dark lenses over the eyes",
              lambda ps: v.covered_eyes(*_backdrop("biden.jpg", (40, 70, 120), (10, 20, 40))(ps))),
    DemoPhoto("black_and_white.jpg", "official", "grayscale", "obama.jpg on beige, in grey levels",
              lambda ps: v.grayscale(_backdrop("obama.jpg", (230, 225, 215), (120, 110, 100))(ps)[0])),
    DemoPhoto("no_headroom.jpg", "official", "no_headroom", "obama3.jpg cut above the eyebrows",
              lambda ps: v.no_headroom(*OBAMA3(ps))),
    DemoPhoto("off_edge.jpg", "official", "mirroring", "biden.jpg cut just left of the face",
              lambda ps: v.off_edge(*BIDEN(ps))),
    DemoPhoto("obama_partial_face.jpg", "official", "mirroring", "bundled: the face at the photo's edge"),
    DemoPhoto("biden.jpg", "press", "keep", "bundled portrait"),
    DemoPhoto("obama2.jpg", "press", "keep", "bundled portrait"),
    DemoPhoto("biden_mirrored.jpg", "press", "duplicate", "biden.jpg flipped, at 80% size",
              lambda ps: v.mirrored(BIDEN(ps)[0])),
    DemoPhoto("astronaut.jpg", "press", "small_face", "bundled: 512 px, the face ~90 px"),
    DemoPhoto("rocket_no_face.jpg", "press", "no_face", "bundled: a launch, nobody in it"),
    DemoPhoto("out_of_focus.jpg", "press", "blurry", "obama2.jpg on green, Gaussian blur",
              lambda ps: v.blurry(*_backdrop("obama2.jpg", (90, 140, 90), (30, 60, 30))(ps))),
    DemoPhoto("thumbnail.jpg", "press", "small_face", "obama3.jpg on orange, at 1/5 size",
              lambda ps: v.small(_backdrop("obama3.jpg", (200, 120, 60), (90, 40, 20))(ps)[0])),
    DemoPhoto("lying_sideways.jpg", "press", "extreme_pose", "obama.jpg on navy, turned 60 degrees",
              lambda ps: v.tilted(*_backdrop("obama.jpg", (20, 30, 60), (70, 90, 140))(ps))),
    DemoPhoto("two_people.jpg", "press", "multiple_faces", "obama.jpg on red beside biden.jpg on cream",
              lambda ps: v.side_by_side(v.face_box(*_backdrop("obama.jpg", (150, 40, 40), (150, 40, 40))(ps)),
                                        v.face_box(*_backdrop("biden.jpg", (235, 230, 200), (235, 230, 200))(ps)))),
    DemoPhoto("product_shot.jpg", "press", "product_shot", "a small obama3.jpg on a colourful packshot",
              lambda ps: v.product_shot(v.face_box(*OBAMA3(ps), margin=0.6))),
)


def load_bundled() -> Photos:
    """The bundled photos that edits start from, decoded once, with their landmarks."""
    return {name: (np.asarray(Image.open(DEMO_DATA / name).convert("RGB")), np.array(points, dtype=float))
            for name, points in LANDMARKS.items()}


def render(photo: DemoPhoto, photos: Photos) -> Listing:
    """The served file of one demo photo: the bundled bytes, or the generated edit encoded as JPEG."""
    if photo.make is None:
        data = (DEMO_DATA / photo.name).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    else:
        pixels = photo.make(photos)
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels)).save(buf, "JPEG", quality=photo.quality)
        data, (height, width) = buf.getvalue(), pixels.shape[:2]
    return Listing(photo.name, f"{photo.how} ({photo.name})", data, width, height)


def build_results(photos: Photos | None = None) -> dict[str, list[Listing]]:
    """The engine's ranked results per search term, in DEMO_PHOTOS order."""
    photos = photos if photos is not None else load_bundled()
    results: dict[str, list[Listing]] = {term: [] for term in QUERIES.values()}
    for photo in DEMO_PHOTOS:
        results[QUERIES[photo.label]].append(render(photo, photos))
    return results


# Settings the demo workspace changes, and why: the engine is on this machine, so no politeness delays.
_DEMO_SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("engines.bing", "base_url", '"{base_url}"'),   # the loopback engine instead of www.bing.com
    ("crawl", "page_delay", "0.0"),                  # no pause between result pages
    ("crawl", "per_host_rate", "1000.0"),            # every photo comes from the same host: 127.0.0.1
    ("crawl", "contact", '"facecurate demo (offline, loopback only)"'),
    ("crawl", "allow_private", "true"),              # the demo's photos are served from 127.0.0.1
)


def configure(ws: Workspace, base_url: str) -> None:
    """Point the workspace's bing engine at the loopback server, in facecurate.toml as a user would."""
    text = ws.config_path.read_text(encoding="utf-8")
    for section, key, value in _DEMO_SETTINGS:
        pattern = re.compile(rf"(^\[{re.escape(section)}\]\n(?:(?!\[).*\n)*?){key} = .*$", re.MULTILINE)
        line = f"{key} = {value.format(base_url=base_url)}"
        text, n = pattern.subn(lambda m: m.group(1) + line, text)  # noqa: B023 - used before the loop moves on
        if n != 1:
            raise FacecurateError(f"The demo could not set [{section}] {key} in {ws.config_path}: the file does "
                                  f"not have the default layout. Run the demo in a new folder (--out).")
    ws.config_path.write_text(text, encoding="utf-8")


@dataclass(frozen=True)
class DemoOutcome:
    """One served photo: what it was made to show and what the pipeline made of it."""

    photo: str
    made_to_show: str
    found: str          # the state in force, with the rules' reasons when they are not just the state
    shown: bool


@dataclass
class DemoResult:
    workspace: Path
    engine_url: str
    run: RunSummary
    outcomes: list[DemoOutcome]


def outcomes(ws: Workspace, catalog: Catalog) -> list[DemoOutcome]:
    """Each served photo beside what it was made to show, read from the manifest's rows (first row per photo)."""
    got: dict[str, tuple[str, list[str]]] = {}
    for row in manifest_rows(ws, catalog, ws.exports_dir):
        location = row["source_url"] or row["source_path"] or ""
        status = row["status"]
        got.setdefault(location.rsplit("/", 1)[-1], (status, row["reasons"] if status != "no_face" else [status]))
    out = []
    for photo in DEMO_PHOTOS:
        status, reasons = got.get(photo.name, ("missing", []))
        found = status if reasons in ([], [status]) else f"{status}: {', '.join(reasons)}"
        out.append(DemoOutcome(photo.name, photo.shows, found, photo.shows in (status, *reasons)))
    return out


def run_demo(out: Path | None = None, device: str | None = None, progress: Progress = SILENT,
             executor: str | None = None) -> DemoResult:
    """init → queries add → run (crawl, dedup, crop, filter, export) against the loopback engine. The engine
    stops when the run ends, whether it finished, failed or was interrupted; a failed stage is in the result."""
    root = out or Path(tempfile.mkdtemp(prefix="facecurate-demo-"))
    ws = init_workspace(root)
    progress.note(f"facecurate demo — workspace {ws.root}")
    with DemoEngine(build_results()) as engine, Catalog.open(ws.catalog_path) as catalog:
        configure(ws, engine.base_url)
        for label, term in QUERIES.items():
            add_terms(ws, catalog, label, [term])
        progress.note(f"search engine (bing's answer shape) on {engine.base_url}; queries: "
                      + ", ".join(f"{label}: {term!r}" for label, term in QUERIES.items()))
        summary = run_pipeline(ws, catalog, RunOptions(engines=("bing",), device=device, executor=executor),
                               progress)
        return DemoResult(ws.root, engine.base_url, summary, outcomes(ws, catalog))
