"""``evaluate DIR``: per-rule precision and recall on photos labelled by folder (reason name or keep).

It runs the real stages (import, crop, filter) in a workspace of its own, then compares each photo's
reasons with its folder. Thresholds that would reach a target precision are found by sweeping each rule's
stored measure, so the suggestion is exactly what editing facecurate.toml would give. An orchestrator (it
runs stages one after another), so it lives beside the pipeline, not in the rules package.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facecurate.catalog import Catalog, FaceRow
from facecurate.errors import FacecurateError
from facecurate.events import SILENT, Progress
from facecurate.faces.crop import CropOptions, run_crop
from facecurate.ingest import import_paths
from facecurate.rules.registry import RULES, Reason, Rule
from facecurate.rules.stage import run_filter, thresholds
from facecurate.workspace import Workspace, init_workspace

KEEP = "keep"
EYE_RULES: tuple[Reason, ...] = ("closed_eyes", "wink", "occluded_eyes")


@dataclass(frozen=True)
class Sample:
    label: str                     # the folder: a reason name or keep
    reasons: list[str]             # what facecurate decided (no_face when no face was found, crop_failed)
    scores: dict[str, float | None] = field(default_factory=dict)


@dataclass
class RuleReport:
    rule: Reason
    support: int
    fired_count: int
    true_positives: int
    precision: float | None
    recall: float | None
    f1: float | None
    fired_by_label: dict[str, int]
    threshold: float
    suggested_threshold: float | None = None
    suggested_precision: float | None = None
    suggested_recall: float | None = None


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def suggest_threshold(rule: Rule, samples: list[Sample], limits: dict[str, float],
                      target: float) -> tuple[float, float, float] | None:
    """The threshold with the best recall among those reaching ``target`` precision, or None.

    Only faces the rule applies to (its precondition under the current thresholds) take part, as in a real
    run; candidate thresholds are the observed values themselves."""
    points = []
    support = sum(s.label == rule.name for s in samples)
    for s in samples:
        value = s.scores.get(rule.measure)
        if value is None or (rule.applies is not None and not rule.applies(s.scores, limits)):
            continue
        points.append((value, s.label == rule.name))
    if not points or not support:
        return None
    below = rule.direction == "below"
    points.sort(key=lambda p: p[0], reverse=not below)  # most suspicious first
    best = None
    tp = fp = 0
    for i, (value, positive) in enumerate(points):
        tp += positive
        fp += not positive
        nxt = points[i + 1][0] if i + 1 < len(points) else None
        if nxt == value:
            continue  # a threshold cannot split equal values
        precision, recall = tp / (tp + fp), tp / support
        if precision >= target and (best is None or recall > best[2]):
            # 'above' fires at value >= limit; 'below' fires strictly under it, so go halfway to the next value
            limit = value if not below else (value + nxt) / 2 if nxt is not None else value + 1e-6
            best = (float(limit), precision, recall)
    return best


@dataclass(frozen=True)
class Evaluation:
    """Every rule against the folders' labels; ``as_dict()`` is the ``evaluate --json`` shape."""

    photos: int
    labels: dict[str, int]
    target_precision: float
    rules: list[RuleReport]
    keep_rejected: float | None                 # share of keep/ photos any rule rejected
    keep_rejected_by_eye_rules: float | None
    workspace: str                              # where the evaluation ran (kept for a look at the crops)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def evaluate_dir(root: Path, workspace: Path | None = None, *, device: str | None = None,
                 target_precision: float | None = None, crop_size: int | None = None,
                 progress: Progress = SILENT) -> Evaluation:
    """Run import → crop → filter over DIR's labelled folders and measure every rule against the labels.

    ``device``, ``target_precision`` and ``crop_size`` None: the evaluation workspace's settings ([crop] device,
    [evaluate] target_precision and crop_size)."""
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    valid = {r.name for r in RULES} | {KEEP}
    unknown = [p.name for p in folders if p.name not in valid]
    if not folders or unknown:
        raise FacecurateError(f"{root} must hold folders named after reasons or 'keep' "
                              f"({', '.join(sorted(valid))}); found {', '.join(unknown) or 'none'}.")
    ws_root = workspace or Path(tempfile.mkdtemp(prefix="facecurate-eval-"))
    ws: Workspace = init_workspace(ws_root)
    cfg = ws.config()
    target = cfg.get("evaluate", "target_precision") if target_precision is None else target_precision
    size = cfg.get("evaluate", "crop_size") if crop_size is None else crop_size
    crop_options = CropOptions.from_config(ws, device=device, size=size)  # checks --device before any work
    with Catalog.open(ws.catalog_path) as catalog:
        for folder in folders:
            progress.note(f"import {folder.name}")
            import_paths(ws, catalog, [folder], label=folder.name, progress=progress)
        run_crop(ws, catalog, crop_options, progress=progress)
        run_filter(ws, catalog, progress=progress)
        samples = _samples(catalog)
    return report(samples, thresholds(ws), float(target), str(ws.root))


def _samples(catalog: Catalog) -> list[Sample]:
    """One sample per imported photo: its largest face's reasons (crop stores faces largest first), or
    no_face / crop_failed."""
    first_face: dict[int, FaceRow] = {}
    for row in catalog.faces():  # by photo, then face index: the first one seen is the largest
        first_face.setdefault(row.image_id, row)
    out = []
    for img in catalog.images():
        face = first_face.get(img.id)
        label = img.label or ""
        if face is None:
            out.append(Sample(label, ["no_face"] if img.crop_state == "no_face" else ["crop_failed"]))
        else:
            out.append(Sample(label, list(face.reasons), dict(face.scores)))
    return out


def report(samples: list[Sample], limits: dict[str, float], target: float, workspace: str) -> Evaluation:
    labels = Counter(s.label for s in samples)
    rules = []
    for rule in RULES:
        fired_by: dict[str, int] = defaultdict(int)
        for s in samples:
            if rule.name in s.reasons:
                fired_by[s.label] += 1
        fired = sum(fired_by.values())
        support = labels.get(rule.name, 0)
        tp = fired_by.get(rule.name, 0)
        precision, recall = _ratio(tp, fired), _ratio(tp, support)
        f1 = (2 * precision * recall / (precision + recall)) if precision and recall else None
        entry = RuleReport(rule.name, support, fired, tp, precision, recall, f1, dict(fired_by),
                           limits.get(rule.name, rule.default))
        suggestion = suggest_threshold(rule, samples, limits, target)
        if suggestion:
            entry.suggested_threshold, entry.suggested_precision, entry.suggested_recall = suggestion
        rules.append(entry)
    keep = [s for s in samples if s.label == KEEP]
    return Evaluation(
        photos=len(samples), labels=dict(labels), target_precision=target, rules=rules,
        keep_rejected=_ratio(sum(bool(s.reasons) for s in keep), len(keep)),
        keep_rejected_by_eye_rules=_ratio(sum(any(r in s.reasons for r in EYE_RULES) for s in keep), len(keep)),
        workspace=workspace)
