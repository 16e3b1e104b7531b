"""facecurate `dedup` vs imagededup's PHash on one near-duplicate set, in one run: pair precision, recall, images/s.

The set: every real face photo (../shared/eval/dev/ordinary_faces when present, else the bundled demo photos)
plus eight edited copies of it — half size, JPEG q=30, mirrored, 5% trimmed (split at random between the
sides, so usually off-centre), a small text watermark, brightness +15% and -15%, and mirrored + 5% trimmed.
All copies of one photo form the true pairs; any pair across photos is a false one.

facecurate runs its real stage on a workspace holding the set (the import is not timed; hashing, search,
verification, grouping and the catalog writes are), with its defaults. The anchor is what people reach for:
``PHash().encode_images`` + ``find_duplicates`` at its default threshold (10), in a separate interpreter
because imagededup pins old dependencies (make it with
``uv venv /tmp/idd --python 3.12 && uv pip install --python /tmp/idd/bin/python imagededup``).

    uv run python benchmarks/bench_dedup.py                     # facecurate and the anchor, photo level
    uv run python benchmarks/bench_dedup.py --faces             # also crop + face-level groups (pipeline view)
    uv run python benchmarks/bench_dedup.py --anchor-python /path/to/python --json
    uv run python benchmarks/bench_dedup.py --repeat 5           # median of 5 interleaved runs per tool (default 3)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEMO, DEV, images_in, print_wide_table

from facecurate.catalog import Catalog
from facecurate.dedup import DedupOptions, run_dedup
from facecurate.dedup.stage import WORKERS
from facecurate.ingest import import_paths
from facecurate.workspace import init_workspace

ANCHOR_SCRIPT = r"""
import json, os, resource, sys, time
from imagededup.methods import PHash
hasher = PHash(verbose=False)  # encode_images forks a multiprocessing pool of os.cpu_count() workers
t0, c0 = time.perf_counter(), time.process_time()
encodings = hasher.encode_images(image_dir=sys.argv[1])
duplicates = hasher.find_duplicates(encoding_map=encodings)  # default max_distance_threshold=10
seconds = time.perf_counter() - t0
cpu = time.process_time() - c0 + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "duplicates": duplicates, "workers": os.cpu_count()}))
"""

Edit = Callable[[Image.Image, random.Random], Image.Image]


def _trim(im: Image.Image, rng: random.Random, share: float = 0.05) -> Image.Image:
    """Trim ``share`` of the width and of the height, split at random between the two sides."""
    dx, dy = im.width * share, im.height * share
    left, top = dx * rng.random(), dy * rng.random()
    return im.crop((round(left), round(top), round(im.width - (dx - left)), round(im.height - (dy - top))))


def _watermark(im: Image.Image, rng: random.Random) -> Image.Image:
    out = im.copy()
    font = ImageFont.load_default(size=max(9, im.height // 14))
    ImageDraw.Draw(out).text((im.width * rng.uniform(0.03, 0.3), im.height * rng.uniform(0.8, 0.88)),
                             "© stockphoto.com", fill=(255, 255, 255), font=font)
    return out


def _flip(im: Image.Image) -> Image.Image:
    return im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


EDITS: dict[str, Edit] = {
    "resize50": lambda im, _: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
    "jpeg30": lambda im, _: im,  # saved at quality 30 below
    "hflip": lambda im, _: _flip(im),
    "crop5": _trim,
    "watermark": _watermark,
    "brighter15": lambda im, _: ImageEnhance.Brightness(im).enhance(1.15),
    "darker15": lambda im, _: ImageEnhance.Brightness(im).enhance(0.85),
    "hflip+crop5": lambda im, rng: _trim(_flip(im), rng),
}


def build_set(originals: list[Path], folder: Path, seed: int = 0) -> dict[str, tuple[int, str]]:
    """Write the originals and their edited copies; returns file name -> (photo number, edit)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    truth: dict[str, tuple[int, str]] = {}
    for i, src in enumerate(originals):
        name = f"{i:04d}_original{src.suffix.lower()}"
        shutil.copyfile(src, folder / name)
        truth[name] = (i, "original")
        im = Image.open(src).convert("RGB")
        for edit, fn in EDITS.items():
            name = f"{i:04d}_{edit}.jpg"
            fn(im, rng).save(folder / name, "JPEG", quality=30 if edit == "jpeg30" else 90)
            truth[name] = (i, edit)
    return truth


def pairs_of(groups: list[list[str]]) -> set[tuple[str, str]]:
    return {(a, b) if a < b else (b, a) for g in groups for a, b in itertools.combinations(g, 2)}


def score(predicted: set[tuple[str, str]], truth: dict[str, tuple[int, str]]) -> dict[str, float]:
    names = sorted(truth)
    true = {(a, b) for a, b in itertools.combinations(names, 2) if truth[a][0] == truth[b][0]}
    hit = len(predicted & true)
    out = {"pairs_true": len(true), "pairs_predicted": len(predicted), "pairs_correct": hit,
           "precision": hit / len(predicted) if predicted else 1.0, "recall": hit / len(true) if true else 1.0}
    by_photo = {(v[0], v[1]): k for k, v in truth.items()}
    for edit in EDITS:
        got = [((a, b) if a < b else (b, a)) in predicted for (p, e), b in by_photo.items() if e == edit
               for a in [by_photo[(p, "original")]]]
        out[f"recall_{edit}"] = sum(got) / len(got) if got else float("nan")
    return out


def _children_cpu() -> float:
    """User CPU of finished worker processes (process_time counts this process only)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime


def run_facecurate(folder: Path, root: Path, threshold: int | None, faces: bool) -> dict[str, object]:
    ws = init_workspace(root / "ws")
    with Catalog.open(ws.catalog_path) as catalog:
        import_paths(ws, catalog, [folder])  # the import stage, not timed
        t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
        summary = run_dedup(ws, catalog, DedupOptions.from_config(ws, threshold=threshold, faces=False))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0 + _children_cpu() - k0
        t1 = time.perf_counter()
        warm = run_dedup(ws, catalog, DedupOptions.from_config(ws, threshold=threshold, faces=False))
        rerun = time.perf_counter() - t1
        names = {image_id: Path(s.location).name for image_id, s in catalog.first_sources().items()}
        groups: dict[int, list[str]] = {}
        for image_id, fields in catalog.dedup_grouped_images().items():
            if fields.group is not None:
                groups.setdefault(fields.group, []).append(names[image_id])
        out: dict[str, object] = {"seconds": seconds, "cpu_seconds": cpu, "rerun_seconds": rerun,
                                  "rerun_hashed": warm.photo_level.hashed, "groups": list(groups.values()),
                                  "stats": summary.photo_level.stats}
        if faces:
            out.update(_face_level(ws, catalog, names, threshold))
    return out


def _face_level(ws: object, catalog: Catalog, names: dict[int, str], threshold: int | None) -> dict[str, object]:
    """Crop (timed apart) and group the faces: which photos end up with one face in the dataset."""
    from facecurate.faces.crop import CropOptions, run_crop

    t0 = time.perf_counter()
    run_crop(ws, catalog, CropOptions.from_config(ws, size=256))  # type: ignore[arg-type]
    crop_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    run_dedup(ws, catalog, DedupOptions.from_config(ws, threshold=threshold, faces=True))  # type: ignore[arg-type]
    face_s = time.perf_counter() - t1
    groups: dict[int, list[str]] = {}
    with_face = set()
    for face in catalog.faces():
        with_face.add(names[face.image_id])
        key = face.dup_of if face.dup_of is not None else (face.id if face.dup_group is not None else None)
        if key is not None:
            groups.setdefault(key, []).append(names[face.image_id])
    return {"crop_seconds": crop_s, "face_seconds": face_s, "face_groups": list(groups.values()),
            "with_face": sorted(with_face)}


def run_anchor(python: Path, folder: Path) -> dict[str, object] | None:
    if not python.exists():
        print(f"anchor skipped: {python} does not exist. Make it with `uv venv /tmp/idd --python 3.12 && "
              f"uv pip install --python /tmp/idd/bin/python imagededup`, or pass --anchor-python.", file=sys.stderr)
        return None
    proc = subprocess.run([str(python), "-c", ANCHOR_SCRIPT, str(folder)], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"anchor failed ({python}):\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    dups: dict[str, list[str]] = data["duplicates"]
    return {"seconds": data["seconds"], "cpu_seconds": data["cpu_seconds"], "workers": data["workers"],
            "pairs": {(a, b) if a < b else (b, a) for a, bs in dups.items() for b in bs}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, help="folder of original photos [default: ordinary_faces or demo]")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N originals")
    ap.add_argument("--anchor-python", type=Path, default=Path("/tmp/idd/bin/python"))
    ap.add_argument("--threshold", type=int, default=None, help="facecurate threshold [default: its setting]")
    ap.add_argument("--faces", action="store_true", help="also crop and group faces (pipeline view)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each tool; the median run is reported")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.source:
        originals = images_in(args.source)
    else:
        originals = images_in(DEV / "ordinary_faces")
        if not originals:
            print(f"{DEV / 'ordinary_faces'} is absent: using the bundled demo photos instead.", file=sys.stderr)
            originals = images_in(DEMO)
    if args.limit:
        originals = originals[:args.limit]
    if not originals:
        print("no photos to build the set from", file=sys.stderr)
        sys.exit(0)
    with tempfile.TemporaryDirectory(prefix="bench_dedup_") as tmp:
        folder = Path(tmp) / "set"
        truth = build_set(originals, folder, args.seed)
        n = len(truth)
        # A run lasts about a second, so one run's ratio swings with the machine: both tools run --repeat times,
        # interleaved, and each reports its median run (the groups are the same in every run).
        ours_runs, anchor_runs = [], []
        for k in range(args.repeat):
            root = Path(tmp) / f"run{k}"
            root.mkdir()
            ours_runs.append(run_facecurate(folder, root, args.threshold, args.faces and k == 0))
            anchor_runs.append(run_anchor(args.anchor_python, folder))
            if anchor_runs[-1] is None:
                break
        ours = {**ours_runs[0], **_median_run(ours_runs), "seconds_runs": [r["seconds"] for r in ours_runs]}
        anchor = _median_run(anchor_runs) if anchor_runs[-1] is not None else None
    result: dict[str, object] = {"images": n, "originals": len(originals), "cpus": os.cpu_count(),
                                 "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    ours_score = score(pairs_of(ours["groups"]), truth)  # type: ignore[arg-type]
    result["facecurate"] = {**ours_score, "seconds": ours["seconds"], "seconds_runs": ours["seconds_runs"],
                            "cpu_seconds": ours["cpu_seconds"],
                            "images_per_s": n / ours["seconds"], "rerun_seconds": ours["rerun_seconds"],  # type: ignore[operator]
                            "rerun_hashed": ours["rerun_hashed"], "stats": ours["stats"], "workers": WORKERS}
    if args.faces:
        faced = {k: v for k, v in truth.items() if k in set(ours["with_face"])}  # type: ignore[arg-type]
        result["facecurate_faces"] = {**score(pairs_of(ours["face_groups"]), faced),  # type: ignore[arg-type]
                                      "images_with_face": len(faced), "crop_seconds": ours["crop_seconds"],
                                      "face_dedup_seconds": ours["face_seconds"]}
    if anchor is not None:
        result["imagededup"] = {**score(anchor["pairs"], truth), "seconds": anchor["seconds"],  # type: ignore[arg-type]
                                "seconds_runs": [r["seconds"] for r in anchor_runs],  # type: ignore[index]
                                "cpu_seconds": anchor["cpu_seconds"],
                                "images_per_s": n / anchor["seconds"], "workers": anchor["workers"]}  # type: ignore[operator]
        result["ratio"] = result["facecurate"]["images_per_s"] / result["imagededup"]["images_per_s"]  # type: ignore[index]
        # CPU seconds (workers included) per image, anchor / ours: steadier than wall time on a shared machine
        result["cpu_ratio"] = anchor["cpu_seconds"] / ours["cpu_seconds"]  # type: ignore[operator]
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return
    _print(result)


def _median_run(runs: list[dict[str, object]]) -> dict[str, object]:
    """The run with the median wall time (the upper median for an even count)."""
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]  # type: ignore[arg-type, return-value]


def _print(result: dict[str, object]) -> None:
    tools = [t for t in ("facecurate", "imagededup", "facecurate_faces") if t in result]
    cols = ["tool", "images", "seconds", "images/s", "precision", "recall", "pairs predicted", "pairs true",
            *[f"recall {e}" for e in EDITS]]
    rows = []
    for t in tools:
        r: dict[str, float] = result[t]  # type: ignore[assignment]
        label = {"facecurate_faces": "facecurate +faces (after crop)"}.get(t, t)
        images = r.get("images_with_face", result["images"])
        secs = r.get("seconds", r.get("face_dedup_seconds", float("nan")))
        rate = r.get("images_per_s", float("nan"))
        rows.append([label, images, secs, rate, f"{r['precision']:.4f}", f"{r['recall']:.4f}",
                     r["pairs_predicted"], r["pairs_true"], *[f"{r[f'recall_{e}']:.3f}" for e in EDITS]])
    print_wide_table(f"dedup on {result['images']} images ({result['originals']} photos x 9); "
                     f"{result['cpus']} CPUs, load {result['load_average']:.1f}", cols, rows, width=220)
    if "imagededup" in result:
        ours, theirs = result["facecurate"], result["imagededup"]
        print(f"images/s ratio facecurate / imagededup: {result['ratio']:.2f}x "  # type: ignore[index]
              f"(worker processes: facecurate {ours['workers']}, imagededup {theirs['workers']}); CPU-seconds ratio "
              f"{result['cpu_ratio']:.2f}x")  # type: ignore[index]
    fc = result["facecurate"]
    print(f"facecurate re-run with a warm cache: {fc['rerun_seconds']:.2f} s, {fc['rerun_hashed']} files hashed; "  # type: ignore[index]
          f"candidates {fc['stats'].get('candidates')}, rejected by verification "  # type: ignore[index]
          f"{fc['stats'].get('rejected_by_verify')}")  # type: ignore[index]


if __name__ == "__main__":
    main()
