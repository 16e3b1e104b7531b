"""The rules' figures on ../shared/eval/dev, through `facecurate evaluate` (the issue's measured targets).

    uv run python benchmarks/eval_dev.py [--device cpu] [--alignment default|ffhq] [--trims] [--json]

The dev folders are named by collection, not by reason, so this script links them into a reason-named
tree (nothing is copied into the repository) and runs `evaluate` (facecurate.evaluate, what the command
runs) on it twice: once on the labelled sets, once on the unscreened ordinary faces (all put under keep/) to
see how many the eye rules reject. ``--alignment`` sets the evaluation workspaces' [crop] alignment (the eye
rules were tuned on the default's crops; ffhq shows how they carry to the script's). Exits cleanly when
../shared is absent.

``--trims`` also measures the figures on copies of every photo with one pixel row or column trimmed (TRIMS):
the same faces, found again, so their landmarks move by a fraction of a pixel against the content. A figure's
spread over those runs is how much it moves for reasons no change of code made; a before/after difference
smaller than that spread says nothing about the change.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEV, print_table

from facecurate import media
from facecurate.evaluate import evaluate_dir
from facecurate.workspace import render_default_toml

LABELLED = {
    "closed_eyes": ["eyes_closed_vs_open/closed", "eyes_closed_vs_open_fullres_small/closed"],
    "keep": ["eyes_closed_vs_open/open", "eyes_closed_vs_open_fullres_small/open",
             "eyes_occluded/clear_eyeglasses_eyes_visible", "wink/both_eyes_open_control"],
    "wink": ["wink/wink_one_eye_closed"],
    "occluded_eyes": ["eyes_occluded/sunglasses"],
}
ORDINARY = {"keep": ["ordinary_faces/utkface_unscreened"]}


# (left, top) pixels cut off each photo's edges; PNG copies, so the trim is the only change to the pixels
TRIMS = {"left column": (1, 0), "top row": (0, 1), "both": (1, 1)}
TRIM_MAX_PIXELS = 100_000_000  # dev photos are trusted, but go through the one decoder the pipeline uses


def link_tree(spec: dict[str, list[str]], root: Path, trim: tuple[int, int] | None = None) -> Path:
    """A reason-named tree of links to the dev photos, or (``trim``) of trimmed PNG copies in ``root``."""
    for reason, subs in spec.items():
        target = root / reason
        target.mkdir(parents=True)
        for sub in subs:
            for f in sorted((DEV / sub).iterdir()):
                if f.is_file() and not f.name.endswith(".md"):
                    name = f"{sub.replace('/', '__')}__{f.name}"
                    if trim is None:
                        (target / name).symlink_to(f)
                    else:
                        pixels = media.decode(f.read_bytes(), str(f), TRIM_MAX_PIXELS).pixels
                        (target / f"{name}.png").write_bytes(media.encode(pixels[trim[1]:, trim[0]:], "png"))
    return root


# (figure, target as text, the bound as a number, True when the figure must reach it from below)
TARGETS = {
    "closed_eyes precision (closed vs open sets)": (">= 0.95", 0.95, True),
    "closed_eyes recall": (">= 0.90", 0.90, True),
    "wink recall": (">= 0.90", 0.90, True),
    "false winks on open faces": ("<= 0.05", 0.05, False),
    "occluded_eyes recall (sunglasses)": (">= 0.75", 0.75, True),
    "occluded_eyes false flags on open + clear-glasses faces": ("<= 0.03", 0.03, False),
    "ordinary_faces rejected by the eye rules": ("<= 0.08", 0.08, False),
}


def _config(alignment: str) -> str:
    """The default facecurate.toml with [crop] alignment set (the one line that differs)."""
    default = render_default_toml()
    line = 'alignment = "default"'
    if default.count(line) != 1:
        raise SystemExit(f"facecurate.toml no longer holds one line {line!r}; update eval_dev._config")
    return default.replace(line, f'alignment = "{alignment}"')


def measure(device: str = "cpu", alignment: str = "default",
            trim: tuple[int, int] | None = None) -> tuple[dict[str, float | None], dict[str, Any]]:
    """The issue's figures on the dev split (and the raw evaluate reports, as `evaluate --json` gives them)."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in (("labelled", LABELLED), ("ordinary", ORDINARY)):
            tree = link_tree(spec, Path(tmp) / name, trim)
            workspace = Path(tmp) / f"{name}-workspace"
            workspace.mkdir()
            (workspace / "facecurate.toml").write_text(_config(alignment), encoding="utf-8")
            evaluation = evaluate_dir(tree, workspace, device=device)
            results[name] = evaluation.as_dict()
    rules = {r["rule"]: r for r in results["labelled"]["rules"]}
    keep_n = results["labelled"]["labels"]["keep"]
    values = [rules["closed_eyes"]["precision"], rules["closed_eyes"]["recall"], rules["wink"]["recall"],
              rules["wink"]["by_label"].get("keep", 0) / keep_n, rules["occluded_eyes"]["recall"],
              rules["occluded_eyes"]["by_label"].get("keep", 0) / keep_n,
              results["ordinary"]["keep_rejected_by_eye_rules"]]
    return dict(zip(TARGETS, values, strict=True)), results


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _spread(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) - min(known) if known else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--alignment", default="default", choices=("default", "ffhq"))
    ap.add_argument("--trims", action="store_true", help="also measure on one-pixel trims of every photo")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not DEV.is_dir():
        print(f"{DEV} is absent: the dev photos live beside the repository, not in it. Nothing to measure.")
        return
    figures, results = measure(args.device, args.alignment)
    if args.trims:
        trimmed = {name: measure(args.device, args.alignment, trim)[0] for name, trim in TRIMS.items()}
        runs = {"as is": figures} | trimmed
        if args.json:
            print(json.dumps({"benchmark": "rules_dev_trims", "alignment": args.alignment, "runs": runs}))
            return
        print_table(f"rules on ../shared/eval/dev, {args.alignment} alignment, photos as they are and trimmed",
                    ["figure", *runs, "spread"],
                    [[k, *(_shown(r[k]) for r in runs.values()), _shown(_spread([r[k] for r in runs.values()]))]
                     for k in figures])
        return
    met = {k: v is not None and (v >= bound if up else v <= bound) for k, v in figures.items()
           for _, bound, up in [TARGETS[k]]}
    if args.json:
        print(json.dumps({"benchmark": "rules_dev", "alignment": args.alignment, "figures": figures,
                          "targets_met": met, "raw": results}))
        return
    print_table(f"rules on ../shared/eval/dev, {args.alignment} alignment "
                f"({results['labelled']['photos']} labelled photos, "
                f"{results['ordinary']['photos']} ordinary)", ["figure", "value", "target", "met"],
                [[k, "-" if v is None else f"{v:.3f}", TARGETS[k][0], "yes" if met[k] else "NO"]
                 for k, v in figures.items()])


if __name__ == "__main__":
    main()
