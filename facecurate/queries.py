"""Tracked search terms: pending vs used, per engine, mirrored as text a person can edit.

Users start from keyword lists and crawl them in rounds; what they need is that no search runs twice and that
the list still to do is plain text they can edit and version. The catalog holds the truth (terms, labels,
one run per (term, engine)); ``queries/<label>.txt`` in the workspace lists the terms still pending. Edits to
that file are picked up by the next command: a line added is tracked, a pending line deleted is dropped.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facecurate import media
from facecurate.catalog import Catalog, QueryRow, RunRow
from facecurate.errors import FacecurateError
from facecurate.workspace import Config, Workspace

_LABEL = re.compile(r"^[\w][\w.-]*$")
HEADER = """\
# facecurate queries, label "{label}": the terms still to search (pending), one per line.
# Edit freely: a line you add is tracked, and a pending line you delete is dropped, at the next facecurate
# command. Searched terms leave this file; `facecurate queries list` shows them with engine, date and counts.
"""


def clean_term(term: str) -> str:
    """One spelling per term: Unicode NFC (Korean typed on different systems matches), single spaces."""
    return " ".join(unicodedata.normalize("NFC", term).split())


def check_label(label: str) -> str:
    label = unicodedata.normalize("NFC", label.strip())
    if not _LABEL.match(label):
        raise FacecurateError(f"Label {label!r} cannot name a file: use letters, digits, '-', '_' or '.' "
                              f"(e.g. makeup, no_makeup).")
    return label


def parse_terms(text: str) -> list[str]:
    """Terms of a keyword list: one per line; blank lines and ``#`` comments ignored; order kept, no repeats."""
    seen: dict[str, None] = {}
    for line in text.splitlines():
        term = clean_term(line)
        if term and not term.startswith("#"):
            seen.setdefault(term, None)
    return list(seen)


def read_terms_file(path: Path) -> list[str]:
    try:
        return parse_terms(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        raise FacecurateError(f"Cannot read the keyword list {path}: {exc}. Pass a UTF-8 text file with one "
                              f"term per line.") from exc


def configured_engines(cfg: Config) -> list[str]:
    from facecurate.crawl.engines import ENGINES

    names = [n.strip().lower() for n in str(cfg.get("crawl", "engines")).split(",") if n.strip()]
    unknown = [n for n in names if n not in ENGINES]
    if unknown or not names:
        raise FacecurateError(f"[crawl] engines = {cfg.get('crawl', 'engines')!r} in facecurate.toml: "
                              f"use a comma-separated list of {', '.join(ENGINES)}.")
    return names


def is_pending(run: RunRow | None) -> bool:
    """A pair is used only once a run finished; an interrupted or blocked run stays pending (resumable)."""
    return run is None or run.state != "done"


def mirror_path(ws: Workspace, label: str) -> Path:
    return ws.queries_dir / f"{label}.txt"


def write_mirror(ws: Workspace, catalog: Catalog, label: str, engines: list[str]) -> Path:
    """Rewrite ``queries/<label>.txt`` with the terms pending for any of ``engines``."""
    queries = catalog.tracked_queries(label)
    runs = catalog.latest_runs(q.id for q in queries)
    pending = [q.term for q in queries if any(is_pending(runs.get((q.id, e))) for e in engines)]
    data = (HEADER.format(label=label) + "".join(f"{t}\n" for t in pending)).encode("utf-8")
    path = mirror_path(ws, label)
    media.atomic_write(path, data, ws.tmp_dir)
    catalog.set_query_file_hash(label, hashlib.sha256(data).hexdigest())
    return path


@dataclass
class SyncReport:
    added: dict[str, list[str]] = field(default_factory=dict)
    dropped: dict[str, list[str]] = field(default_factory=dict)


def sync_from_files(ws: Workspace, catalog: Catalog, engines: list[str]) -> SyncReport:
    """Pick up a person's edits to ``queries/*.txt`` (only files changed since facecurate wrote them)."""
    report = SyncReport()
    if not ws.queries_dir.is_dir():
        return report
    labels = set(catalog.query_labels())
    for path in sorted(ws.queries_dir.glob("*.txt")):
        label = path.stem
        if not _LABEL.match(label):
            continue
        data = path.read_bytes()
        if catalog.query_file_hash(label) == hashlib.sha256(data).hexdigest():
            continue
        terms = read_terms_file(path)
        with catalog.transaction():
            added = [t for t in terms if catalog.add_query(label, t)]
            dropped: list[str] = []
            if label in labels:  # a file facecurate wrote before: pending lines deleted by hand are dropped
                queries = catalog.tracked_queries(label)
                runs = catalog.latest_runs(q.id for q in queries)
                keep = set(terms)
                for q in queries:
                    pending = any(is_pending(runs.get((q.id, e))) for e in engines)
                    if pending and q.term not in keep and catalog.remove_query(label, q.term):
                        dropped.append(q.term)
        if added:
            report.added[label] = added
        if dropped:
            report.dropped[label] = dropped
        with catalog.transaction():
            write_mirror(ws, catalog, label, engines)
    return report


def add_terms(ws: Workspace, catalog: Catalog, label: str, terms: list[str]) -> tuple[list[str], list[str]]:
    """Track ``terms`` under ``label``; returns (added, already tracked)."""
    label = check_label(label)
    engines = configured_engines(ws.config())
    synced = sync_from_files(ws, catalog, engines).added.get(label, [])  # e.g. --file queries/<label>.txt
    added, known = [], []
    with catalog.transaction():
        for term in dict.fromkeys(clean_term(t) for t in terms):
            if not term:
                continue
            (added if catalog.add_query(label, term) or term in synced else known).append(term)
        write_mirror(ws, catalog, label, engines)
    return added, known


def remove_terms(ws: Workspace, catalog: Catalog, label: str, terms: list[str]) -> tuple[list[str], list[str]]:
    """Stop tracking ``terms`` (their runs and images stay); returns (removed, not tracked)."""
    label = check_label(label)
    engines = configured_engines(ws.config())
    sync_from_files(ws, catalog, engines)
    removed, unknown = [], []
    with catalog.transaction():
        for term in dict.fromkeys(clean_term(t) for t in terms):
            (removed if catalog.remove_query(label, term) else unknown).append(term)
        write_mirror(ws, catalog, label, engines)
    return removed, unknown


@dataclass(frozen=True)
class PairStatus:
    """One (term, engine) cell of `queries list`."""

    engine: str
    state: str                       # pending | running | blocked | used
    date: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QueryStatus:
    label: str
    term: str
    added_at: str
    pairs: list[PairStatus]

    @property
    def pending(self) -> bool:
        return any(p.state != "used" for p in self.pairs)


def list_status(ws: Workspace, catalog: Catalog, label: str | None = None,
                engines: list[str] | None = None) -> tuple[list[str], list[QueryStatus]]:
    """Every tracked term with the state of each engine: configured engines plus any that ran."""
    configured = configured_engines(ws.config())
    sync_from_files(ws, catalog, configured)
    queries: list[QueryRow] = catalog.tracked_queries(check_label(label) if label else None)
    runs = catalog.latest_runs(q.id for q in queries)
    shown = list(dict.fromkeys([*(engines or configured), *sorted({e for _, e in runs})]))
    out = []
    for q in queries:
        pairs = []
        for e in shown:
            run = runs.get((q.id, e))
            if run is None:
                pairs.append(PairStatus(e, "pending"))
                continue
            state = "used" if run.state == "done" else run.state
            pairs.append(PairStatus(e, state, run.finished_at or run.started_at, catalog.run_counts(run.id)))
        out.append(QueryStatus(q.label, q.term, q.added_at, pairs))
    return shown, out


def status_json(engines: list[str], statuses: list[QueryStatus]) -> str:
    return json.dumps({"engines": engines, "queries": [
        {"label": s.label, "term": s.term, "added_at": s.added_at, "pending": s.pending,
         "engines": {p.engine: {"state": p.state, "date": p.date, **p.counts} for p in s.pairs}}
        for s in statuses]}, ensure_ascii=False, indent=2)
