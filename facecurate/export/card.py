"""The dataset card: the ``README.md`` written with every export, for the person who publishes or reuses it.

Hugging Face reads its YAML header (licences, task, size, and ``configs``: which files make which split and, for
imagefolder, the features, so ``load_dataset(folder)`` gets ``label`` as a ClassLabel); a person reads the rest:
how the photos were collected, what curation left out and why, the licence table, the tool version and its
settings. The header is written as YAML whose values are JSON (JSON is valid YAML), so no YAML library is needed.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from facecurate.catalog import QueryRow, RunRow
from facecurate.export.licenses import license_family
from facecurate.export.manifest import Row

CARD_NAME = "README.md"
CARD_MARK = "<!-- facecurate dataset card: each export rewrites this file -->"
# Settings that name a person rather than describe the data; a card is written to be published.
PRIVATE_SETTINGS = (("crawl", "contact"), ("review", "reviewer"))
TASKS = {"imagefolder": ["image-classification"], "per-label": ["image-to-image", "image-classification"],
         "cyclegan": ["image-to-image"], "none": ["image-classification"]}
# Hugging Face licence ids of the families that have versions; a family with one version across its faces gets
# that id, mixed versions (or pd, other) get "other", explained by the licence table.
HF_LICENSES = frozenset({"cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0",
                         "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
                         "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0",
                         "cc-by-nc-sa-4.0"})


@dataclass
class CardFacts:
    """What the card says, gathered by ``export``: the manifest rows, the rows the layout carries, the split
    folders written, and the workspace's tracked queries and their latest runs."""

    rows: list[Row]
    carried: list[Row]
    layout: str
    licenses: tuple[str, ...]           # the --license filter; empty: every family
    left_out: dict[str, int]            # kept faces the licence filter left out, by family
    config: dict[str, dict[str, Any]]
    version: str
    created_at: str
    queries: list[QueryRow] = field(default_factory=list)
    runs: dict[tuple[int, str], RunRow] = field(default_factory=dict)
    configs: list[dict[str, Any]] = field(default_factory=list)  # Hugging Face configs (data_files, features)
    domains: dict[str, str] = field(default_factory=dict)        # cyclegan: A/B -> label


def hf_licenses(rows: Iterable[Row]) -> list[str]:
    """The card header's ``license`` list: one Hugging Face id per family present (see HF_LICENSES)."""
    versions: dict[str, set[str]] = {}
    for r in rows:
        fam = license_family(r["license"])
        found = re.findall(r"\d\.\d", r["license"] or "")
        versions.setdefault(fam, set()).update(found[:1] or ["?"])
    out = []
    for fam, seen in sorted(versions.items()):
        if fam == "unknown" or fam == "gfdl":
            out.append(fam)
        elif fam == "cc0":
            out.append("cc0-1.0")
        else:
            one = f"{fam}-{next(iter(seen))}" if len(seen) == 1 else ""
            out.append(one if one in HF_LICENSES else "other")
    return list(dict.fromkeys(out)) or ["unknown"]


def size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def _yaml(header: dict[str, Any]) -> str:
    """Top-level YAML keys with JSON values (flow style), ASCII-escaped so any YAML reader takes them."""
    return "".join(f"{key}: {json.dumps(value, ensure_ascii=True)}\n" for key, value in header.items())


def _cell(value: object) -> str:
    """A table cell: crawled text is data, never markdown (no pipes, no newlines, no HTML)."""
    text = re.sub(r"\s+", " ", str(value if value is not None else "")).strip()
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;") or "-"


def _table(head: list[str], body: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in body]
    return lines if body else ["(none)"]


def _day(text: str | None) -> str:
    return (text or "")[:10] or "-"


def render(f: CardFacts) -> str:
    """The card's text (see the module docstring)."""
    splits = Counter(r["split"] for r in f.carried)
    labels = sorted({r["label"] or "unlabelled" for r in f.carried})
    header: dict[str, Any] = {"license": hf_licenses(f.carried), "task_categories": TASKS[f.layout],
                              "size_categories": [size_category(len(f.carried))], "tags": ["faces", "facecurate"],
                              "pretty_name": f"facecurate export ({f.layout})"}
    if f.configs:
        header["configs"] = f.configs
    out = ["---", _yaml(header).rstrip("\n"), "---", CARD_MARK, "", "# Face dataset exported by facecurate", ""]
    out += [f"Aligned face crops (FFHQ alignment of MTCNN detections), curated by rules and review, exported "
            f"{_day(f.created_at)} with facecurate {f.version} in the `{f.layout}` layout: **{len(f.carried)} "
            f"faces** ({', '.join(f'{s} {n}' for s, n in sorted(splits.items())) or 'none'}) in "
            f"{len(labels)} label(s): {', '.join(labels) or '-'}.", ""]
    if f.domains:
        out += [f"CycleGAN domains: A = `{f.domains['A']}`, B = `{f.domains['B']}` (`test*` is the validation "
                f"split).", ""]
    out += ["## Splits", ""]
    per_label = Counter((r["label"] or "unlabelled", r["split"]) for r in f.carried)
    out += _table(["label", "train", "val"], [[lab, per_label[(lab, "train")], per_label[(lab, "val")]]
                                              for lab in labels])
    out += ["", "A photo and its duplicates (mirrored, recompressed, re-posted) are always on one side; each "
            "label is split on its own.", ""]

    out += ["## How the data was collected", ""]
    collected: dict[tuple[str, str, str], list[Row]] = {}
    for r in f.rows:
        if r["status"] == "failed" and not r["engine"]:
            continue
        key = (r["label"] or "unlabelled", r["engine"] or "import", r["query"] or ("local files" if not r["engine"]
                                                                                  else "-"))
        collected.setdefault(key, []).append(r)
    body, carried_ids = [], {id(r) for r in f.carried}
    for (label, engine, query), rs in sorted(collected.items()):
        times = sorted(t for t in (r["retrieved_at"] for r in rs) if t)
        carried = sum(1 for r in rs if id(r) in carried_ids)
        body.append([label, engine, query, len({r["source_sha256"] for r in rs if r["source_sha256"]}),
                     carried, f"{_day(times[0])} .. {_day(times[-1])}" if times else "-"])
    out += _table(["label", "engine", "query", "photos", "faces in dataset", "retrieved"], body)
    if f.queries:
        out += ["", "Tracked queries and their latest crawl per engine:", ""]
        names = {q.id: q for q in f.queries}
        runs = [[names[qid].label, names[qid].term, engine, run.state, _day(run.started_at), _day(run.finished_at)]
                for (qid, engine), run in sorted(f.runs.items()) if qid in names]
        runs += [[q.label, q.term, "-", "not crawled", "-", "-"] for q in f.queries
                 if not any(qid == q.id for qid, _ in f.runs)]
        out += _table(["label", "query", "engine", "state", "started", "finished"], runs)

    out += ["", "## Curation", "", "Every photo went through: exact and near-duplicate grouping (one keeper per "
            "group), face detection and FFHQ alignment, the rejection rules, and a person's review where one "
            "was made (a review decision overrides the rules). Manifest rows by outcome (a face, or a photo or "
            "download without one):", ""]
    status = Counter(r["status"] for r in f.rows)
    out += _table(["outcome", "rows"], [[k, n] for k, n in status.most_common()])
    reasons = Counter(reason for r in f.rows if r["status"] in ("reject", "failed") for reason in r["reasons"])
    out += ["", "Rejections and failures by reason (a face may have several):", ""]
    out += _table(["reason", "rows"], [[k, n] for k, n in reasons.most_common()])
    out += ["", "## Licences", ""]
    fams: dict[str, Counter[str]] = {}
    for r in f.rows:
        if r["status"] == "keep" and r["file_name"]:
            fams.setdefault(license_family(r["license"]), Counter())[r["license"] or "(none recorded)"] += 1
    carried_fams = Counter(license_family(r["license"]) for r in f.carried)
    out += _table(["family", "licences as recorded", "faces in dataset", "kept faces left out"],
                  [[fam, ", ".join(f"{k} ({n})" for k, n in texts.most_common()), carried_fams[fam],
                    f.left_out.get(fam, 0)] for fam, texts in sorted(fams.items())])
    if f.licenses:
        left = sum(f.left_out.values())
        out += ["", f"Licence filter: only {', '.join(f.licenses)}. Left out: {left} kept face(s) whose source "
                f"licence is in another family"
                + (f" ({', '.join(f'{k} {n}' for k, n in sorted(f.left_out.items()))})." if left else ".")]
    out += ["", "Each face's `license`, `author`, `page_url` and `source_url` are in the manifest (and, in the "
            "imagefolder layout, in `metadata.parquet`): keep them with any copy of an image. `unknown` means "
            "no licence was recorded (local imports, search engines that do not give one): check those before "
            "publishing.", ""]
    cfg = {s: {k: v for k, v in values.items() if (s, k) not in PRIVATE_SETTINGS} for s, values in f.config.items()}
    out += ["## Tool and settings", "", f"facecurate {f.version}; every setting in force (from `facecurate.toml`; "
            f"the contact and reviewer name are left out):", "", "```json",
            json.dumps(cfg, indent=1, ensure_ascii=False, sort_keys=True), "```", ""]
    return "\n".join(out)
