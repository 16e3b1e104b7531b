"""The ``filter`` stage: compute missing measures, apply thresholds, store scores, reasons and status."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from facecurate import media
from facecurate.catalog import Catalog, utc_now
from facecurate.errors import ConfigError, ImageError
from facecurate.rules.eyes import FaceMesh
from facecurate.rules.measure import (
    FAMILY_KEYS,
    FRAME_CHECK_BELOW,
    FaceFacts,
    eye_family,
    geometry_measures,
    pixel_measures,
)
from facecurate.rules.registry import RULES, Rule, decide, select
from facecurate.workspace import Workspace

BATCH = 64


@dataclass
class FilterSummary:
    faces: int = 0
    measured: int = 0
    kept: int = 0
    rejected: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    failed: list[tuple[str, str]] = field(default_factory=list)


def thresholds(ws: Workspace) -> dict[str, float]:
    cfg = ws.config().section("rules")
    return {r.name: float(cfg.get(r.name, r.default)) for r in RULES}


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


def run_filter(ws: Workspace, catalog: Catalog, rules: str | None = None, redo: bool = False,
               on_start: Callable[[int], None] | None = None,
               on_progress: Callable[[int], None] | None = None) -> FilterSummary:
    """Measure what ``rules`` need (default: the enabled rules) where it is missing (everything with ``redo``),
    then decide every face with all enabled rules and the current thresholds."""
    chosen = enabled_rules(ws, rules)
    deciding = [r for r in RULES if r in enabled_rules(ws, None) or r in chosen]
    limits = thresholds(ws)
    min_prob = float(ws.config().get("crop", "min_prob"))
    families = {r.family for r in chosen} - {"image"}
    needed_keys = {fam: FAMILY_KEYS[fam] for fam in families}
    rows = catalog.conn.execute(
        "SELECT f.id, f.status, f.scores, f.bbox, f.landmarks, f.quad, f.oob_fraction, f.above_fraction, "
        "f.side_fraction, f.crop_size, f.crop_path, i.width, i.height, i.path, i.detections "
        "FROM faces f JOIN images i ON i.id = f.image_id ORDER BY f.id").fetchall()
    summary = FilterSummary(faces=len(rows))
    if on_start:
        on_start(len(rows))
    mesh: FaceMesh | None = None
    cfg = ws.config()
    max_pixels, max_bytes = cfg.get("media", "max_pixels"), cfg.get("media", "max_bytes")

    def todo(row) -> set[str]:
        scores = json.loads(row["scores"])
        return {fam for fam, keys in needed_keys.items() if redo or any(k not in scores for k in keys)}

    def load(row) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
        """Decode the crop (and the photo when the face is small) in a worker thread."""
        fams = todo(row)
        if not fams & {"pixels", "eyes"}:
            return None, None, None
        try:
            crop = media.load_rgb(ws.resolve(row["crop_path"]), max_pixels, max_bytes).pixels
            photo = None
            bbox = json.loads(row["bbox"])
            share = (bbox[2] - bbox[0]) * (bbox[3] - bbox[1]) / max(row["width"] * row["height"], 1)
            if "pixels" in fams and share < FRAME_CHECK_BELOW:
                photo = media.load_rgb(ws.resolve(row["path"]), max_pixels, max_bytes).pixels
            return crop, photo, None
        except ImageError as exc:
            return None, None, str(exc)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for start in range(0, len(rows), BATCH):
            batch = rows[start:start + BATCH]
            loaded = list(pool.map(load, batch))
            updates = []
            for row, (crop, photo, error) in zip(batch, loaded, strict=True):
                scores: dict[str, float | None] = json.loads(row["scores"])
                fams = todo(row)
                facts = FaceFacts(np.array(json.loads(row["landmarks"])), np.array(json.loads(row["quad"])),
                                  json.loads(row["bbox"]), row["oob_fraction"], row["above_fraction"],
                                  row["side_fraction"], row["crop_size"], row["width"], row["height"],
                                  json.loads(row["detections"]), min_prob)
                if "geometry" in fams:
                    scores.update(geometry_measures(facts))
                if error is not None:
                    summary.failed.append((row["crop_path"], error))
                elif crop is not None:
                    if "pixels" in fams:
                        scores.update(pixel_measures(facts, crop, photo))
                    if "eyes" in fams:
                        mesh = mesh or FaceMesh.shared()
                        scores.update(eye_family(mesh, crop))
                if fams:
                    summary.measured += 1
                scores = {k: _clean(v) for k, v in scores.items()}
                reasons = decide(scores, limits, deciding)
                status = row["status"] if row["status"] == "duplicate" else ("reject" if reasons else "keep")
                summary.by_reason.update(reasons)
                if status == "reject" or (status == "duplicate" and reasons):
                    summary.rejected += 1
                else:
                    summary.kept += 1
                updates.append((json.dumps(scores), json.dumps(reasons), status, utc_now(), row["id"]))
            with catalog.transaction():
                catalog.conn.executemany("UPDATE faces SET scores=?, reasons=?, status=?, filtered_at=? WHERE id=?",
                                         updates)
            if on_progress:
                on_progress(len(batch))
    return summary


def explain(ws: Workspace, catalog: Catalog, sample_id: str) -> list[dict[str, object]]:
    """Every rule's measure beside its threshold for one face (sample_id as in the manifest)."""
    sha, _, index = sample_id.partition("_")
    row = catalog.conn.execute(
        "SELECT f.scores, f.reasons FROM faces f JOIN images i ON i.id = f.image_id "
        "WHERE i.sha256 LIKE ? AND f.face_index = ?", (sha + "%", int(index or 0))).fetchone()
    if row is None:
        raise ConfigError(f"No face {sample_id!r} in this workspace: use a sample_id from the manifest "
                          f"(`facecurate export`), e.g. 0930e3aa8cae5920_0.")
    scores, reasons = json.loads(row["scores"]), set(json.loads(row["reasons"]))
    limits = thresholds(ws)
    return [{"rule": r.name, "measure": r.measure, "value": scores.get(r.measure), "threshold": limits[r.name],
             "fires_when": r.direction, "fired": r.name in reasons, "doc": r.doc} for r in RULES if r.family != "image"]
