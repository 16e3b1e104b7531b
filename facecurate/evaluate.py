"""``evaluate DIR``: per-rule precision and recall on photos labelled by folder (reason name or keep).

It runs the real stages (import, crop, filter) in a workspace of its own, then compares each photo's
reasons with its folder. Thresholds that would reach a target precision are found by sweeping each rule's
stored measure (:mod:`facecurate.rules.fitting`, shared with ``calibrate``, which fits the same way to review
decisions and prints the same record), so the suggestion is exactly what editing facecurate.toml would give.
An orchestrator (it runs stages one after another), so it lives beside the pipeline, not in the rules package.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facecurate.catalog import Catalog, FaceRow
from facecurate.errors import FacecurateError
from facecurate.events import SILENT, Progress
from facecurate.faces.crop import CropOptions, run_crop
from facecurate.ingest import import_paths
from facecurate.rules.fitting import Example, RuleFit, fit_rule, ratio
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


def examples_of(rule: Rule, samples: list[Sample]) -> list[Example]:
    """Every photo as an example for one rule: positive when its folder is the rule's name. A photo with no face
    has no measures (no rule can fire on it) except the image-level no_face flag."""
    out = []
    for s in samples:
        measures = dict(s.scores)
        if "no_face" in s.reasons:
            measures["no_face"] = 1.0
        out.append(Example(measures, s.label == rule.name))
    return out


@dataclass(frozen=True)
class Evaluation:
    """Every rule against the folders' labels; ``as_dict()`` is the ``evaluate --json`` shape."""

    photos: int
    labels: dict[str, int]
    target_precision: float
    rules: list[RuleFit]         # the shared fitting module's record, as `calibrate` prints it
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
    """Each rule fitted to the folders' labels by the one fitting module ``calibrate`` uses too."""
    labels = Counter(s.label for s in samples)
    rules = []
    for rule in RULES:
        ex = examples_of(rule, samples)
        fit = fit_rule(rule, ex, limits, target_precision=target, resamples=0)
        fit.by_label = dict(Counter(s.label for s, e in zip(samples, ex, strict=True)
                                    if rule.fires(e.measures, limits)))
        rules.append(fit)
    keep = [s for s in samples if s.label == KEEP]
    return Evaluation(
        photos=len(samples), labels=dict(labels), target_precision=target, rules=rules,
        keep_rejected=ratio(sum(bool(s.reasons) for s in keep), len(keep)),
        keep_rejected_by_eye_rules=ratio(sum(any(r in s.reasons for r in EYE_RULES) for s in keep), len(keep)),
        workspace=workspace)
