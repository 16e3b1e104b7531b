"""A simulated reviewer on ../shared/eval/dev: how many decisions does `calibrate` need, and does the
`review --calibrate` order beat deciding faces at random?

    uv run python benchmarks/calibrate_dev.py [--workspace DIR] [--seeds 5] [--json]

The dev photos are measured once (import, crop, filter: what `evaluate` runs; `--workspace DIR` keeps that
workspace and reuses it next time). Then, starting from today's default thresholds, a reviewer who answers with
the dev label (a reject with the label as its reason, or a keep) decides 25, 50, 100 and 200 faces, chosen
either by the calibrate queue (asked 25 at a time, as `review --calibrate 25` sessions would) or at random; after
each budget the eye rules are fitted to those decisions exactly as `calibrate` fits them (facecurate.rules.fitting
via facecurate.review.calibration.examples), and each eye rule's precision/recall is measured on the *rest* of
the dev set (the photos not decided). The reference is the thresholds fitted on every dev label, measured on the
same held-back photos. Nothing is copied into the repository; exits cleanly when ../shared is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEV, print_table
from eval_dev import LABELLED, link_tree

from facecurate.catalog import Catalog, Decision
from facecurate.evaluate import EYE_RULES, KEEP, evaluate_dir
from facecurate.review.calibration import Candidate, examples, queue
from facecurate.rules.fitting import fit_rule
from facecurate.rules.registry import BY_NAME, RULES
from facecurate.workspace import SETTINGS, Workspace

BUDGETS = (25, 50, 100, 200)
STEP = 25
TARGET_GAP = 0.01   # "within 1 point" of the all-labels thresholds
MIN_DECISIONS = next(s.default for s in SETTINGS if s.section == "calibrate" and s.key == "min_decisions")
RANDOM_SHARE = next(s.default for s in SETTINGS if s.section == "calibrate" and s.key == "random_share")


@dataclass(frozen=True)
class Face:
    key: int
    folder: str                  # the dev label: a reason or keep
    scores: dict[str, Any]


@dataclass(frozen=True)
class Answer:
    """The simulated reviewer's decision, shaped as the catalog's DecidedFace is read by calibration."""

    decision: Decision
    reason: str | None
    scores: dict[str, Any]
    label: str | None = None     # one workspace label: the dev folder must not leak in as a label


def answer(face: Face) -> Answer:
    if face.folder == KEEP:
        return Answer(Decision.KEPT, None, face.scores)
    return Answer(Decision.REJECTED, face.folder, face.scores)


def measured_faces(workspace: Path) -> list[Face]:
    if not (workspace / "facecurate.db").exists():
        with tempfile.TemporaryDirectory() as tmp:
            tree = link_tree(LABELLED, Path(tmp) / "tree")
            evaluate_dir(tree, workspace, device="cpu")
    with Catalog.open(workspace / "facecurate.db") as cat:
        labels = {img.id: img.label or "" for img in cat.images()}
        first: dict[int, Face] = {}
        for f in cat.faces():  # the largest face of each photo, as evaluate counts it
            if f.image_id not in first and f.filtered_at is not None:
                first[f.image_id] = Face(f.id, labels[f.image_id], dict(f.scores))
    return list(first.values())


def fit(decided: list[Answer], base: dict[str, float], min_decisions: int) -> dict[str, float]:
    """The eye rules fitted one after another to the decisions, as `calibrate --apply` would leave them."""
    limits = dict(base)
    for name in EYE_RULES:
        rule = BY_NAME[name]
        ex = examples(rule, decided)
        if len(ex) < min_decisions:
            continue
        got = fit_rule(rule, ex, limits, resamples=0)
        if got.suggested_threshold is not None:
            limits[name] = got.suggested_threshold
    return limits


def scores(faces: list[Face], limits: dict[str, float]) -> dict[str, tuple[float | None, float | None]]:
    out = {}
    for name in EYE_RULES:
        rule = BY_NAME[name]
        fired = [rule.fires(f.scores, limits) for f in faces]
        pos = [f.folder == name for f in faces]
        tp = sum(a and b for a, b in zip(fired, pos, strict=True))
        # no photo of this kind left: no recall, and no precision to speak of
        n_fired, n_pos = sum(fired), sum(pos)
        out[name] = ((tp / n_fired if n_fired else 0.0) if n_pos else None, tp / n_pos if n_pos else None)
    return out


def simulate(faces: list[Face], base: dict[str, float], ordering: str, seed: int) -> dict[int, dict[str, Any]]:
    rng = random.Random(seed)
    eye = [BY_NAME[n] for n in EYE_RULES]
    decided_keys: list[int] = []
    answers: list[Answer] = []
    by_key = {f.key: f for f in faces}
    out = {}
    for budget in BUDGETS:
        while len(decided_keys) < budget:
            left = [f for f in faces if f.key not in set(decided_keys)]
            take = min(STEP, budget - len(decided_keys))
            if ordering == "active":
                picked = [q.face_id for q in queue([Candidate(f.key, f.scores, None) for f in left], answers,
                                               lambda _label: base, eye, take, RANDOM_SHARE, rng.randrange(2**31))]
            else:
                picked = [f.key for f in rng.sample(left, take)]
            decided_keys += picked
            answers += [answer(by_key[k]) for k in picked]
        limits = fit(answers, base, MIN_DECISIONS)
        rest = [f for f in faces if f.key not in set(decided_keys)]
        reference = fit([answer(f) for f in faces], base, 1)
        out[budget] = {"thresholds": {n: limits[n] for n in EYE_RULES}, "held_back": len(rest),
                       "scores": scores(rest, limits), "reference": scores(rest, reference)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", type=Path, help="measure the dev photos here once, and reuse it")
    ap.add_argument("--seeds", type=int, default=5, help="runs per ordering (different random draws)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("COLUMNS", "150")  # the table is wide; Rich reads the width from here off a terminal
    if not DEV.is_dir():
        print(f"{DEV} is absent: the dev photos live beside the repository, not in it. Nothing to measure.")
        return
    tmp = None
    if args.workspace is None:
        tmp = tempfile.TemporaryDirectory()
        args.workspace = Path(tmp.name) / "ws"
    faces = measured_faces(args.workspace)
    base = {r.name: float(r.default) for r in RULES}
    ws = Workspace(args.workspace)
    reference = fit([answer(f) for f in faces], base, 1)
    runs = {o: [simulate(faces, base, o, seed) for seed in range(args.seeds)] for o in ("active", "random")}
    rows, summary = [], {}
    for budget in BUDGETS:
        for ordering, results in runs.items():
            gaps = []
            for name in EYE_RULES:
                # a held-back set with no photo of a kind (every wink asked already) has no P or R: left out
                pairs = [(r[budget]["scores"][name], r[budget]["reference"][name]) for r in results]
                pairs = [(a, b) for a, b in pairs if None not in (*a, *b)]
                if not pairs:
                    rows.append([budget, ordering, name, "-", "-", "-", "-", "-", "-", "all asked"])
                    continue
                p, rec = [a[0] for a, _ in pairs], [a[1] for a, _ in pairs]
                pr, rr = [b[0] for _, b in pairs], [b[1] for _, b in pairs]
                each = [max(abs(a - b), abs(c - d)) for a, b, c, d in zip(p, pr, rec, rr, strict=True)]
                gap, worst = mean(each), max(each)
                thr = mean(r[budget]["thresholds"][name] for r in results)
                gaps.append(gap)
                rows.append([budget, ordering, name, f"{thr:.3f}", f"{mean(p):.3f}", f"{mean(rec):.3f}",
                             f"{mean(pr):.3f}", f"{mean(rr):.3f}", f"{gap:.3f}", f"{worst:.3f}"])
                summary[f"{budget}/{ordering}/{name}"] = {"threshold": thr, "precision": mean(p), "recall": mean(rec),
                                                          "ref_precision": mean(pr), "ref_recall": mean(rr),
                                                          "mean_gap": gap, "worst_gap": worst}
            summary[f"{budget}/{ordering}"] = {"mean_gap": mean(gaps)}
    within = all(summary.get(f"100/active/{n}", {"worst_gap": 1.0})["worst_gap"] <= TARGET_GAP for n in EYE_RULES)
    better = {b: summary[f"{b}/active"]["mean_gap"] < summary[f"{b}/random"]["mean_gap"] for b in BUDGETS}
    if args.json:
        print(json.dumps({"benchmark": "calibrate_dev", "faces": len(faces), "seeds": args.seeds,
                          "defaults": {n: base[n] for n in EYE_RULES}, "fitted_on_all": {n: reference[n]
                                                                                       for n in EYE_RULES},
                          "table": summary, "within_1_point_at_100": within, "active_better": better}))
        return
    print(f"{len(faces)} dev faces measured ({ws.root}); defaults "
          + ", ".join(f"{n} {base[n]:g}" for n in EYE_RULES) + "; fitted on all dev labels "
          + ", ".join(f"{n} {reference[n]:.3f}" for n in EYE_RULES))
    print_table(f"simulated reviewer, {args.seeds} runs per ordering: eye rules on the held-back dev photos "
                "(ref: thresholds fitted on all dev labels, same photos; gap: max(|dP|, |dR|))",
                ["budget", "order", "rule", "threshold", "P", "R", "ref P", "ref R", "mean gap", "worst gap"], rows)
    print(f"target: every eye rule within {TARGET_GAP:g} of the reference at 100 active decisions (every run): "
          f"{'met' if within else 'NOT met'}")
    print("active order closer to the reference than random (mean gap over the eye rules): "
          + ", ".join(f"{b}: {'yes' if v else 'NO'} ({summary[f'{b}/active']['mean_gap']:.3f} vs "
                      f"{summary[f'{b}/random']['mean_gap']:.3f})" for b, v in better.items()))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
