"""Tracked search terms, crawl's input: pending vs used per engine, mirrored as text a person can edit.

Users start from keyword lists and crawl them in rounds; what they need is that no search runs twice and that
the list still to do is plain text they can edit and version. The catalog holds the truth (terms, labels,
one run per (term, engine)); ``queries/<label>.txt`` in the workspace lists the terms still pending. Edits to
that file are picked up by the next command that writes (add, remove, crawl, run): a line added is tracked, a
pending line deleted is dropped. Listing only reads: it shows what those edits will do without applying them.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from facecurate import media
from facecurate.catalog import Catalog, QueryRow, RunRow
from facecurate.catalog.queries import RunCounts
from facecurate.crawl.engines import ENGINES
from facecurate.errors import ConfigError, FacecurateError
from facecurate.workspace import Config, Workspace

_LABEL = re.compile(r"^[\w][\w.-]*$")
HEADER = """\
# facecurate queries, label "{label}": the terms still to search (pending), one per line.
# Edit freely: a line you add is tracked, and a pending line you delete is dropped, at the next facecurate
# command. Searched terms leave this file; `facecurate queries list` shows them with engine, date and counts.
"""

PairState = Literal["pending", "running", "blocked", "used"]


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


@dataclass(frozen=True)
class FileEdits:
    """What a person changed in one ``queries/<label>.txt`` since facecurate last wrote it."""

    label: str
    added: list[str]      # terms to track: new, or removed once and written again
    dropped: list[str]    # pending terms whose line was deleted


def file_edits(ws: Workspace, catalog: Catalog, engines: list[str]) -> list[FileEdits]:
    """The edits waiting in ``queries/*.txt`` (only files changed since facecurate wrote them); reads only."""
    if not ws.queries_dir.is_dir():
        return []
    labels = set(catalog.query_labels())
    out = []
    for path in sorted(ws.queries_dir.glob("*.txt")):
        label = path.stem
        if not _LABEL.match(label):
            continue
        if catalog.query_file_hash(label) == hashlib.sha256(path.read_bytes()).hexdigest():
            continue
        terms = read_terms_file(path)
        queries = catalog.tracked_queries(label)
        tracked = {q.term for q in queries}
        dropped: list[str] = []
        if label in labels:  # a file facecurate wrote before: pending lines deleted by hand are dropped
            runs = catalog.latest_runs(q.id for q in queries)
            keep = set(terms)
            dropped = [q.term for q in queries
                       if q.term not in keep and any(is_pending(runs.get((q.id, e))) for e in engines)]
        out.append(FileEdits(label, [t for t in terms if t not in tracked], dropped))
    return out


@dataclass
class SyncReport:
    added: dict[str, list[str]] = field(default_factory=dict)
    dropped: dict[str, list[str]] = field(default_factory=dict)


def sync_from_files(ws: Workspace, catalog: Catalog, engines: list[str]) -> SyncReport:
    """Apply a person's edits to ``queries/*.txt`` and rewrite those files in facecurate's form."""
    report = SyncReport()
    for edits in file_edits(ws, catalog, engines):
        with catalog.transaction():
            for term in edits.added:
                catalog.add_query(edits.label, term)
            for term in edits.dropped:
                catalog.remove_query(edits.label, term)
            write_mirror(ws, catalog, edits.label, engines)
        if edits.added:
            report.added[edits.label] = edits.added
        if edits.dropped:
            report.dropped[edits.label] = edits.dropped
    return report


def add_terms(ws: Workspace, catalog: Catalog, label: str, terms: list[str]) -> tuple[list[str], list[str]]:
    """Track ``terms`` under ``label``; returns (added, already tracked)."""
    label = check_label(label)
    engines = configured_engines(ws.config())
    synced = sync_from_files(ws, catalog, engines).added.get(label, [])  # e.g. --file queries/<label>.txt
    added: list[str] = []
    known: list[str] = []
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
    removed: list[str] = []
    unknown: list[str] = []
    with catalog.transaction():
        for term in dict.fromkeys(clean_term(t) for t in terms):
            (removed if catalog.remove_query(label, term) else unknown).append(term)
        write_mirror(ws, catalog, label, engines)
    return removed, unknown


@dataclass(frozen=True)
class PairStatus:
    """One (term, engine) cell of `queries list`; ``counts`` is None while no run started."""

    engine: str
    state: PairState
    date: str | None = None
    counts: RunCounts | None = None


@dataclass(frozen=True)
class QueryStatus:
    """One tracked term; ``added_at`` is None for a term written into ``queries/<label>.txt`` by hand and
    not yet picked up (the next add, remove or crawl tracks it)."""

    label: str
    term: str
    added_at: str | None
    pairs: list[PairStatus]

    @property
    def pending(self) -> bool:
        return any(p.state != "used" for p in self.pairs)


@dataclass(frozen=True)
class _Untracked:
    """A term written into a mirror file by hand that no query row holds yet."""

    label: str
    term: str


def _with_edits(catalog: Catalog, queries: list[QueryRow], edits: list[FileEdits],
                label: str | None) -> list[QueryRow | _Untracked]:
    """The tracked queries as they will be once ``edits`` are applied, in the order the catalog will list
    them then (label, then id; brand-new terms last, in file order)."""
    by_label: dict[str, list[QueryRow | _Untracked]] = {}
    for q in queries:
        by_label.setdefault(q.label, []).append(q)
    for e in edits:
        if label is not None and e.label != label:
            continue
        dropped = set(e.dropped)
        kept = [q for q in by_label.get(e.label, []) if isinstance(q, QueryRow) and q.term not in dropped]
        removed = catalog.removed_queries(e.label) if e.added else {}
        back = [removed[t] for t in e.added if t in removed]  # adding a removed term back revives its row
        new = [_Untracked(e.label, t) for t in e.added if t not in removed]
        by_label[e.label] = [*sorted([*kept, *back], key=lambda q: q.id), *new]
    return [q for lab in sorted(by_label) for q in by_label[lab]]


@dataclass(frozen=True)
class QueryListing:
    """`queries list`: the engines shown (configured ones plus any that ran) and every tracked term."""

    engines: list[str]
    queries: list[QueryStatus]

    @property
    def pending(self) -> int:
        """Terms still pending for at least one engine."""
        return sum(q.pending for q in self.queries)


def list_queries(ws: Workspace, catalog: Catalog, label: str | None = None,
                engines: list[str] | None = None) -> QueryListing:
    """Every tracked term with the state of each engine: configured engines plus any that ran.

    Hand edits to ``queries/*.txt`` are shown as they will be applied, but nothing is written."""
    configured = configured_engines(ws.config())
    label = check_label(label) if label else None
    items = _with_edits(catalog, catalog.tracked_queries(label), file_edits(ws, catalog, configured), label)
    runs = catalog.latest_runs(q.id for q in items if isinstance(q, QueryRow))
    shown = list(dict.fromkeys([*(engines or configured), *sorted({e for _, e in runs})]))
    out = []
    for q in items:
        if isinstance(q, _Untracked):
            out.append(QueryStatus(q.label, q.term, None, [PairStatus(e, "pending") for e in shown]))
            continue
        pairs = []
        for e in shown:
            run = runs.get((q.id, e))
            if run is None:
                pairs.append(PairStatus(e, "pending"))
                continue
            state: PairState = "used" if run.state == "done" else run.state
            pairs.append(PairStatus(e, state, run.finished_at or run.started_at, catalog.run_counts(run.id)))
        out.append(QueryStatus(q.label, q.term, q.added_at, pairs))
    return QueryListing(shown, out)


def check_terms(ws: Workspace, catalog: Catalog, terms: list[str]) -> list[str]:
    """``--query`` terms as tracked (cleaned, no repeats); one that is not tracked is an error before anything
    runs. Terms added by hand to ``queries/<label>.txt`` count (the crawl picks them up); nothing is written."""
    wanted = list(dict.fromkeys(clean_term(t) for t in terms))
    if not wanted:
        return []
    edits = file_edits(ws, catalog, configured_engines(ws.config()))
    dropped = {(e.label, t) for e in edits for t in e.dropped}
    tracked = {q.term for q in catalog.tracked_queries() if (q.label, q.term) not in dropped}
    tracked.update(t for e in edits for t in e.added)
    unknown = [t for t in wanted if t not in tracked]
    if unknown:
        raise ConfigError(f"Not a tracked query: {', '.join(repr(t) for t in unknown)} (in {ws.root}). Add it with "
                          f"`facecurate queries add --label LABEL TERM`, or check `facecurate queries list`.")
    return wanted
