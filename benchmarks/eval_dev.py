"""The rules' figures on ../shared/eval/dev, through `facecurate evaluate` (the issue's measured targets).

    uv run python benchmarks/eval_dev.py [--device cpu]

The dev folders are named by collection, not by reason, so this script links them into a reason-named
tree (nothing is copied into the repository) and runs `facecurate evaluate` on it twice: once on the
labelled sets, once on the unscreened ordinary faces (all put under keep/) to see how many the eye rules
reject. Exits cleanly when ../shared is absent.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEV, print_table

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not DEV.is_dir():
        print(f"{DEV} is absent: the dev photos live beside the repository, not in it. Nothing to measure.")
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in (("labelled", LABELLED), ("ordinary", ORDINARY)):
            tree = link_tree(spec, Path(tmp) / name)
            out = subprocess.run([sys.executable, "-m", "facecurate", "evaluate", str(tree), "--device", args.device,
                                  "--json"], check=True, capture_output=True, text=True)
            results[name] = json.loads(out.stdout)
    rules = {r["rule"]: r for r in results["labelled"]["rules"]}
    keep_n = results["labelled"]["labels"]["keep"]
    figures = [
        ("closed_eyes precision (closed vs open sets)", rules["closed_eyes"]["precision"], ">= 0.95"),
        ("closed_eyes recall", rules["closed_eyes"]["recall"], ">= 0.90"),
        ("wink recall", rules["wink"]["recall"], ">= 0.90"),
        ("false winks on open faces", rules["wink"]["fired_by_label"].get("keep", 0) / keep_n, "<= 0.05"),
        ("occluded_eyes recall (sunglasses)", rules["occluded_eyes"]["recall"], ">= 0.75"),
        ("occluded_eyes false flags on open + clear-glasses faces",
         rules["occluded_eyes"]["fired_by_label"].get("keep", 0) / keep_n, "<= 0.03"),
        ("ordinary_faces rejected by the eye rules", results["ordinary"]["keep_rejected_by_eye_rules"], "<= 0.08"),
    ]
    if args.json:
        print(json.dumps({"benchmark": "rules_dev", "figures": {k: v for k, v, _ in figures}, "raw": results}))
        return
    print_table(f"rules on ../shared/eval/dev ({results['labelled']['photos']} labelled photos, "
                f"{results['ordinary']['photos']} ordinary)", ["figure", "value", "target"],
                [[k, "-" if v is None else round(v, 3), t] for k, v, t in figures])


if __name__ == "__main__":
    main()
