"""The ``filter`` stage: compute missing measures, apply the thresholds, store scores and reasons.

Filter writes only its own facts (measures, reasons, ``filtered_at``); whether a face is kept, rejected or a
duplicate in force is derived from every stage's facts by :mod:`facecurate.catalog.state`.
"""

from __future__ import annotations

import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facecurate import media
from facecurate.catalog import Catalog
from facecurate.catalog.faces import FaceToFilter, FilterResult
from facecurate.errors import ConfigError, ImageError
from facecurate.events import SILENT, Failure, Progress
from facecurate.filestore import FileStore, open_store
from facecurate.rules.eyes import FaceMesh
from facecurate.rules.measure import (
    FAMILY_KEYS,
    FRAME_CHECK_BELOW,
    PHOTO_SIDE,
    FaceFacts,
    eye_family,
    geometry_measures,
    pixel_measures,
)
from facecurate.rules.registry import RULES, Direction, Reason, Rule, decide, select
from facecurate.workspace import Workspace

BATCH = 64


@dataclass
class FilterSummary:
    """What the rules decided this run: every face is decided again, only faces lacking a measure are measured."""

    faces: int = 0
    measured: int = 0
    passed: int = 0                  # no rule fired
    rejected: int = 0                # at least one rule fired
    by_reason: Counter[Reason] = field(default_factory=Counter)
    failed: list[Failure] = field(default_factory=list)   # crops that could not be read (not measured)


@dataclass(frozen=True)
class RuleExplained:
    """One rule's view of one face, for ``filter --explain``."""

    rule: Reason
    measure: str
    value: float | None
    threshold: float
    fires_when: Direction
    fired: bool
    doc: str


def thresholds(ws: Workspace, label: str | None = None) -> dict[str, float]:
    """Every rule's threshold for a face of ``label``: ``[rules]``, overlaid with ``[rules.<label>]``."""
    cfg = ws.config().rule_thresholds(label)
    return {r.name: float(cfg.get(r.name, r.default)) for r in RULES}


class LabelThresholds:
    """Thresholds per label, looked up once per label: filter decides each face with its own label's."""

    def __init__(self, ws: Workspace) -> None:
        self._ws = ws
        self._labels = set(ws.config().rule_labels())
        self._cache: dict[str | None, dict[str, float]] = {None: thresholds(ws)}

    @property
    def labels(self) -> set[str]:
        """Labels with a ``[rules.<label>]`` section of their own."""
        return set(self._labels)

    def __call__(self, label: str | None) -> dict[str, float]:
        key = label if label in self._labels else None
        if key not in self._cache:
            self._cache[key] = thresholds(self._ws, key)
        return self._cache[key]


@dataclass
class RedecideSummary:
    """What deciding every face again from its stored measures changed (``calibrate --apply``)."""

    faces: int = 0
    now_rejected: int = 0            # the rules kept it before, reject it now
    now_kept: int = 0                # the rules rejected it before, keep it now
    reasons_changed: int = 0         # any change of the reason list, the two above included
    unmeasured: int = 0              # faces filter never measured: left for the next `filter`


def redecide(ws: Workspace, catalog: Catalog) -> RedecideSummary:
    """Decide every measured face again with the thresholds in force, from its stored measures only: no crop is
    read, nothing is measured (a face filter never measured is left to ``filter``)."""
    limits = LabelThresholds(ws)
    deciding = [r for r in RULES if r in enabled_rules(ws, None)]
    summary = RedecideSummary()
    results = []
    for face in catalog.faces_to_filter():
        if face.filtered_at is None:
            summary.unmeasured += 1
            continue
        summary.faces += 1
        reasons = decide(face.scores, limits(face.label), deciding)
        if list(reasons) != list(face.reasons):
            summary.reasons_changed += 1
            summary.now_rejected += bool(reasons) and not face.reasons
            summary.now_kept += not reasons and bool(face.reasons)
            results.append(FilterResult(face.id, dict(face.scores), reasons))
    with catalog.transaction():
        catalog.save_filter_results(results)
    return summary


def enabled_rules(ws: Workspace, names: str | None) -> list[Rule]:
    try:
        configured = select(ws.config().get("rules", "enabled"))
        return select(names) if names else configured
    except ValueError as exc:
        raise ConfigError(f"{exc} (from --rules or [rules] enabled in facecurate.toml)") from exc


def _clean(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(float(value), 5)


def load_pixels(files: FileStore, face: FaceToFilter, fams: set[str] | frozenset[str], max_pixels: int,
                max_bytes: int) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """The crop, and the photo at most PHOTO_SIDE when the face is a small share of it, for the families that
    read pixels; or why the crop could not be read. Shared by both executors (rules/filter_work.py)."""
    if not fams & {"pixels", "eyes"}:
        return None, None, None
    try:
        crop = media.decode(files.read(face.crop_path, max_bytes), face.crop_path, max_pixels).pixels
        photo = None
        bbox = face.bbox
        share = (bbox[2] - bbox[0]) * (bbox[3] - bbox[1]) / max(face.photo_width * face.photo_height, 1)
        if "pixels" in fams and share < FRAME_CHECK_BELOW:
            data = files.read(face.photo_path, max_bytes)
            photo = media.decode(data, face.photo_path, max_pixels, max_side=PHOTO_SIDE).pixels
        return crop, photo, None
    except ImageError as exc:
        return None, None, str(exc)


def measure_face(face: FaceToFilter, fams: set[str] | frozenset[str], crop: np.ndarray | None,
                 photo: np.ndarray | None, error: str | None, min_prob: float) -> dict[str, float | None]:
    """The face's stored scores with ``fams`` measured anew (pixel families only when its crop was read)."""
    scores: dict[str, float | None] = dict(face.scores)
    facts = FaceFacts(np.array(face.landmarks), np.array(face.quad), face.bbox, face.oob_fraction,
                      face.above_fraction, face.side_fraction, face.crop_size, face.photo_width,
                      face.photo_height, face.detections, min_prob)
    if "geometry" in fams:
        scores.update(geometry_measures(facts))
    if error is None and crop is not None:
        if "pixels" in fams:
            scores.update(pixel_measures(facts, crop, photo))
        if "eyes" in fams:
            scores.update(eye_family(FaceMesh.shared(), crop))
    return scores


def settle(summary: FilterSummary, face: FaceToFilter, scores: dict[str, Any], error: str | None, measured: bool,
           limits: LabelThresholds, deciding: list[Rule]) -> FilterResult:
    """One face's scores cleaned, decided and counted: the one place a filter verdict is made, whichever
    executor measured the face (rules/filter_work.py hands its workers' scores here too)."""
    if error is not None:
        summary.failed.append(Failure(face.crop_path, error))
    if measured:
        summary.measured += 1
    cleaned = {k: _clean(v) for k, v in scores.items()}
    reasons = decide(cleaned, limits(face.label), deciding)
    summary.by_reason.update(reasons)
    if reasons:
        summary.rejected += 1
    else:
        summary.passed += 1
    return FilterResult(face.id, cleaned, reasons)


def run_filter(ws: Workspace, catalog: Catalog, *, rules: str | None = None, redo: bool = False,
               progress: Progress = SILENT) -> FilterSummary:
    """Measure what ``rules`` need (default: the enabled rules) where it is missing (everything with ``redo``),
    then decide every face with all enabled rules and the current thresholds."""
    chosen = enabled_rules(ws, rules)
    enabled = enabled_rules(ws, None)
    deciding = [r for r in RULES if r in enabled or r in chosen]
    limits = LabelThresholds(ws)
    cfg = ws.config()
    min_prob = float(cfg.get("crop", "min_prob"))
    max_pixels, max_bytes = cfg.get("media", "max_pixels"), cfg.get("media", "max_bytes")
    families = {r.family for r in chosen} - {"image"}
    needed_keys = {fam: FAMILY_KEYS[fam] for fam in families}
    faces = catalog.faces_to_filter()
    files = open_store(ws)
    summary = FilterSummary(faces=len(faces))
    progress.start("filter", len(faces), "faces")

    def todo(face: FaceToFilter) -> set[str]:
        return {fam for fam, keys in needed_keys.items() if redo or any(k not in face.scores for k in keys)}

    def load(face: FaceToFilter) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
        """Decode the crop (and the photo when the face is small) in a worker thread."""
        return load_pixels(files, face, todo(face), max_pixels, max_bytes)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for start in range(0, len(faces), BATCH):
            batch = faces[start:start + BATCH]
            loaded = list(pool.map(load, batch))
            results = []
            for face, (crop, photo, error) in zip(batch, loaded, strict=True):
                fams = todo(face)
                scores = measure_face(face, fams, crop, photo, error, min_prob)
                results.append(settle(summary, face, scores, error, bool(fams), limits, deciding))
            with catalog.transaction():
                catalog.save_filter_results(results)
            progress.advance(len(batch))
    progress.finish()
    return summary


def explain(ws: Workspace, catalog: Catalog, sample_id: str) -> list[RuleExplained]:
    """Every rule's measure beside its threshold for one face (sample_id as in the manifest)."""
    sha, _, index = sample_id.partition("_")
    face = catalog.face_by_sample(sha, int(index or 0)) if sha and (index or "0").isdigit() else None
    if face is None:
        raise ConfigError(f"No face {sample_id!r} in this workspace: use a sample_id from the manifest "
                          f"(`facecurate export`), e.g. 0930e3aa8cae5920_0.")
    reasons = set(face.reasons)
    image = catalog.image_row(face.image_id)
    limits = thresholds(ws, image.label if image else None)
    return [RuleExplained(rule=r.name, measure=r.measure, value=face.scores.get(r.measure), threshold=limits[r.name],
                          fires_when=r.direction, fired=r.name in reasons, doc=r.doc)
            for r in RULES if r.family != "image"]
