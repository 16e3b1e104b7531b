"""The rules' figures on ../shared/eval/dev, through `facecurate evaluate` (the issue's measured targets).

    uv run python benchmarks/eval_dev.py [--device cpu] [--alignment default|ffhq] [--json]

The dev folders are named by collection, not by reason, so this script links them into a reason-named
tree (nothing is copied into the repository) and runs `evaluate` (facecurate.evaluate, what the command
runs) on it twice: once on the labelled sets, once on the unscreened ordinary faces (all put under keep/) to
see how many the eye rules reject. ``--alignment`` sets the evaluation workspaces' [crop] alignment (the eye
rules were tuned on the default's crops; ffhq shows how they carry to the script's). Exits cleanly when
../shared is absent.
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


def link_tree(spec: dict[str, list[str]], root: Path) -> Path:
    for reason, subs in spec.items():
        target = root / reason
        target.mkdir(parents=True)
        for sub in subs:
            for f in sorted((DEV / sub).iterdir()):
                if f.is_file() and not f.name.endswith(".md"):
                    (target / f"{sub.replace('/', '__')}__{f.name}").symlink_to(f)
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


def measure(device: str = "cpu", alignment: str = "default") -> tuple[dict[str, float | None], dict[str, Any]]:
    """The issue's figures on the dev split (and the raw evaluate reports, as `evaluate --json` gives them)."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in (("labelled", LABELLED), ("ordinary", ORDINARY)):
            tree = link_tree(spec, Path(tmp) / name)
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--alignment", default="default", choices=("default", "ffhq"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not DEV.is_dir():
        print(f"{DEV} is absent: the dev photos live beside the repository, not in it. Nothing to measure.")
        return
    figures, results = measure(args.device, args.alignment)
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
