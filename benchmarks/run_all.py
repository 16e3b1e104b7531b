"""Every benchmark of facecurate, one after another, and one table of facecurate vs anchor.

Each script runs its anchor and facecurate on the same data in one process run and prints ``--json``; this
script runs them as subprocesses (so one's threads and caches never colour another's timing), reads their
figures and prints one table: what was measured, the anchor's figure, facecurate's, the ratio, the target
and whether it was met. Benchmarks whose anchor or data is missing say so in the table instead of failing.

    uv run python benchmarks/run_all.py                  # everything (about 5 minutes on 2 cores)
    uv run python benchmarks/run_all.py --only crop,dedup
    uv run python benchmarks/run_all.py --quick          # smaller sets, for a smoke run
    uv run python benchmarks/run_all.py --json out.json  # also keep every script's raw figures
    uv run python benchmarks/run_all.py --table out.json # the table again from those figures

Anchors that live outside the project's environment (their pins clash with ours):
    imagededup:  uv venv /tmp/idd --python 3.12 && uv pip install --python /tmp/idd/bin/python imagededup
    img2dataset: uv venv /tmp/i2d-venv --python 3.12 && uv pip install --python /tmp/i2d-venv/bin/python img2dataset
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
IDD_PYTHON = Path("/tmp/idd/bin/python")
I2D = Path("/tmp/i2d-venv/bin/img2dataset")

# what, anchor, unit, anchor's value, facecurate's value, target, met
Row = tuple[str, str, str, float | None, float | None, str, bool | None]


@dataclass(frozen=True)
class Bench:
    name: str
    args: list[str]
    quick_args: list[str]
    rows: Callable[[Any], list[Row]]
    needs: Path | None = None   # an anchor executable outside the project environment


def _ratio_row(what: str, anchor: str, unit: str, a: float | None, ours: float | None, target: float) -> Row:
    ratio = ours / a if a and ours else None
    return (what, anchor, unit, a, ours, f"≥ {target:g}×", None if ratio is None else ratio >= target)


def _crop_rows(d: dict[str, Any]) -> list[Row]:
    return [_ratio_row(f"crop {d['images']} photos, batch {r['batch_size']}, {d['device']}",
                       "facenet-pytorch MTCNN loop", "img/s", r["anchor_img_s"], r["facecurate_img_s"], 2.0)
            for r in d["results"]]


def _dedup_rows(d: dict[str, Any]) -> list[Row]:
    ours, anchor = d["facecurate"], d.get("imagededup") or {}
    return [
        _ratio_row(f"dedup {d['images']} photos + edits", "imagededup PHash", "img/s",
                   anchor.get("images_per_s"), ours["images_per_s"], 2.0),
        ("dedup pair precision", "imagededup PHash", "", anchor.get("precision"), ours["precision"], "≥ 0.99",
         ours["precision"] >= 0.99),
        ("dedup pair recall (flips included)", "imagededup PHash", "", anchor.get("recall"), ours["recall"], "≥ 0.95",
         ours["recall"] >= 0.95),
    ]


def _scale_rows(d: list[dict[str, Any]]) -> list[Row]:
    rows: list[Row] = []
    for r in d:
        n = r.get("n") or r.get("items")
        ok = r["wall_s"] < 60 and r["maxrss_mb"] < 1024
        rows.append((f"dedup search {n:,} hashes, 1 core", "-", "s / MB", None, r["wall_s"],
                     f"< 60 s, < 1 GB (peak {r['maxrss_mb']:.0f} MB)", ok if n >= 1_000_000 else None))
    return rows


def _download_rows(d: dict[str, Any]) -> list[Row]:
    runs = {r["tool"]: r for r in d["runs"]}
    ours = runs.get("facecurate", d["runs"][0])["images_per_s"]
    rows = [_ratio_row(f"download {d['n']} URLs, {d['latency'] * 1000:.0f} ms latency", "img2dataset (end to end)",
                       "img/s", runs.get("img2dataset", {}).get("images_per_s"), ours, 1.0)]
    shard = runs.get("img2dataset (shard time only)")
    if shard:  # stricter than the target asks (it leaves out img2dataset's start-up): shown, not judged
        rows.append(("download, same run", "img2dataset (its own shard timer)", "img/s", shard["images_per_s"],
                     ours, "(for information)", None))
    return rows


def _filter_rows(d: dict[str, Any]) -> list[Row]:
    ms = d["ms_per_face"]
    return [(f"filter, all rules, {d['faces']} faces", "-", "ms/face", None, ms, "≤ 15 ms", ms <= 15)]


def _rules_rows(d: dict[str, Any]) -> list[Row]:
    """eval_dev says itself which targets it met; the target texts come from the same table it uses."""
    from eval_dev import TARGETS

    return [(f"rules (dev): {what}", "-", "", None, value, TARGETS[what][0], d["targets_met"][what])
            for what, value in d["figures"].items()]


def _review_rows(d: dict[str, Any]) -> list[Row]:
    """Every measure is listed; the target (interactive within 1 s) applies to the load's "interactive" mark."""
    rows: list[Row] = []
    for what, ms in d["median_ms"].items():
        target = what.startswith("interactive")
        rows.append((f"review {d['items']:,} items: {what}", "-", "ms", None, ms, "≤ 1000 ms" if target else "",
                     ms <= 1000 if target else None))
    return rows


BENCHES: tuple[Bench, ...] = (
    Bench("crop", ["bench_crop.py", "--json"], ["bench_crop.py", "--json", "--limit", "40"], _crop_rows),
    Bench("dedup", ["bench_dedup.py", "--json"], ["bench_dedup.py", "--json", "--limit", "20"], _dedup_rows,
          IDD_PYTHON),
    Bench("dedup_scale", ["bench_dedup_scale.py", "--json"],
          ["bench_dedup_scale.py", "--json", "--sizes", "100000"], _scale_rows),
    Bench("download", ["bench_download.py", "--json", "--img2dataset", str(I2D)],
          ["bench_download.py", "--json", "--img2dataset", str(I2D), "--n", "200"], _download_rows, I2D),
    Bench("filter", ["bench_filter.py", "--json"], ["bench_filter.py", "--json", "--limit", "40"], _filter_rows),
    Bench("rules_dev", ["eval_dev.py", "--json"], ["eval_dev.py", "--json"], _rules_rows),
    Bench("review", ["bench_review.py", "--json"], ["bench_review.py", "--json", "--items", "2000", "--runs", "1"],
          _review_rows),
)


def _last_json(stdout: str) -> Any:
    """The scripts print one JSON document last (some indent it); progress goes to stderr."""
    text = stdout.strip()
    for start in (i for i, ch in enumerate(text) if ch in "[{" and (i == 0 or text[i - 1] == "\n")):
        try:
            return json.loads(text[start:])
        except json.JSONDecodeError:
            continue
    raise ValueError("no JSON document in the output")


def run_bench(bench: Bench, quick: bool, console: Console) -> tuple[list[Row], Any, float]:
    if bench.needs is not None and not bench.needs.exists():
        return [(bench.name, str(bench.needs), "", None, None, "anchor not installed: see --help", None)], None, 0.0
    cmd = [sys.executable, str(HERE / (bench.quick_args if quick else bench.args)[0]),
           *(bench.quick_args if quick else bench.args)[1:]]
    console.print(f"[bold]{bench.name}[/]: {' '.join(cmd[1:])}")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return [(bench.name, "", "", None, None, f"failed: {tail[0][:80]}", False)], None, seconds
    try:
        data = _last_json(proc.stdout)
    except ValueError:  # e.g. eval_dev without ../shared/eval/dev prints why and no figures
        note = proc.stdout.strip().splitlines()[-1:] or ["no figures"]
        return [(bench.name, "", "", None, None, f"skipped: {note[0][:80]}", None)], None, seconds
    return bench.rows(data), data, seconds


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"


def print_table(rows: list[Row], machine: str) -> None:
    table = Table(title=f"facecurate vs anchors ({machine})")
    for col in ("measure", "anchor", "unit", "anchor value", "facecurate", "ratio", "target", "met"):
        table.add_column(col, justify="left" if col in ("measure", "anchor", "target") else "right")
    for what, anchor, unit, a, ours, target, met in rows:
        ratio = f"{ours / a:.2f}×" if a and ours and unit.endswith("/s") else "-"
        table.add_row(what, anchor, unit, _fmt(a), _fmt(ours), ratio, target,
                      {True: "[green]yes[/]", False: "[red]no[/]", None: ""}[met])
    Console(width=200).print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma list of: " + ", ".join(b.name for b in BENCHES))
    ap.add_argument("--quick", action="store_true", help="smaller sets: a smoke run, not figures to report")
    ap.add_argument("--json", type=Path, help="write every script's raw figures here")
    ap.add_argument("--table", type=Path, help="print the table from a file written by --json; run nothing")
    args = ap.parse_args()
    chosen = [b for b in BENCHES if not args.only or b.name in args.only.split(",")]
    unknown = set(args.only.split(",")) - {b.name for b in BENCHES} if args.only else set()
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    if args.table:
        saved = json.loads(args.table.read_text())
        print_table([row for b in chosen if (saved["benchmarks"].get(b.name) or {}).get("figures") is not None
                     for row in b.rows(saved["benchmarks"][b.name]["figures"])], saved["machine"])
        return
    console = Console(stderr=True)
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    for bench in chosen:
        bench_rows, data, seconds = run_bench(bench, args.quick, console)
        rows += bench_rows
        raw[bench.name] = {"seconds": seconds, "figures": data}
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
               f"{platform.python_version()}, load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "")
    print_table(rows, machine)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "benchmarks": raw}, indent=2, default=str))


if __name__ == "__main__":
    main()
