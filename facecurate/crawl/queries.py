"""Tracked search terms, crawl's input: pending vs used per engine, mirrored as text a person can edit.

Users start from keyword lists and crawl them in rounds; what they need is that no search runs twice and that
the list still to do is plain text they can edit and version. The catalog holds the truth (terms, labels,
one run per (term, engine)); ``queries/<label>.txt`` in the workspace lists the terms still pending. Edits to
that file are picked up by the next command that writes (add, remove, crawl, run): a line added is tracked, a
pending line deleted is dropped. Listing only reads: it shows what those edits will do without applying them.

A line may carry the query's own settings after its term: ``term | engines=bing,naver | limit=300`` (also
``face_only=``, ``size=``, ``license=``, checked against the rows of the settings table they stand for). A
query's engines default to ``[crawl] engines``; its limit to ``[crawl] limit``; its filters to the engines'.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from facecurate import media
from facecurate.catalog import Catalog, QueryRow, RunRow
from facecurate.catalog.queries import RunCounts
from facecurate.crawl.engines import ENGINES
from facecurate.errors import ConfigError, FacecurateError
from facecurate.workspace import Config, Workspace, check_setting

_LABEL = re.compile(r"^[\w][\w.-]*$")
HEADER = """\
# facecurate queries, label "{label}": the terms still to search (pending), one per line.
# Edit freely: a line you add is tracked, and a pending line you delete is dropped, at the next facecurate
# command. Searched terms leave this file; `facecurate queries list` shows them with engine, date and counts.
"""

PairState = Literal["pending", "running", "blocked", "used", "skipped"]  # skipped: not one of the query's engines


def clean_term(term: str) -> str:
    """One spelling per term: Unicode NFC (Korean typed on different systems matches), single spaces."""
    return " ".join(unicodedata.normalize("NFC", term).split())


def check_label(label: str) -> str:
    label = unicodedata.normalize("NFC", label.strip())
    if not _LABEL.match(label):
        raise FacecurateError(f"Label {label!r} cannot name a file: use letters, digits, '-', '_' or '.' "
                              f"(e.g. makeup, no_makeup).")
    return label


# A query's own settings: key -> the settings-table row its value is checked against.
QUERY_KEYS: dict[str, tuple[str, str]] = {"limit": ("crawl", "limit"), "face_only": ("engines.bing", "face_only"),
                                          "size": ("engines.bing", "size"), "license": ("engines.bing", "license")}
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def split_entry(line: str, where: str = "a query") -> tuple[str, dict[str, Any]]:
    """``term | key=value | …`` -> (term, its own settings), each value checked. Pure but for the table."""
    term, *parts = line.split("|")
    settings: dict[str, Any] = {}
    for part in (p.strip() for p in parts):
        if not part:
            continue
        key, eq, raw = (x.strip() for x in part.partition("="))
        key = key.lower()
        if not eq or (key not in QUERY_KEYS and key != "engines"):
            raise ConfigError(f"{where}: {part!r} is not a query setting: write `term | engines=bing,naver | "
                              f"limit=300` (keys: engines, {', '.join(QUERY_KEYS)}).")
        if key == "engines":
            names = [n.strip().lower() for n in raw.split(",") if n.strip()]
            unknown = [n for n in names if n not in ENGINES]
            if unknown or not names:
                raise ConfigError(f"{where}: engines={raw!r}: use a comma list of {', '.join(ENGINES)}.")
            settings[key] = list(dict.fromkeys(names))
            continue
        value: Any = raw
        if key == "limit" and raw.isdigit():
            value = int(raw)
        elif key == "face_only" and raw.lower() in _TRUE + _FALSE:
            value = raw.lower() in _TRUE
        section, name = QUERY_KEYS[key]
        settings[key] = check_setting(section, name, value, f"{where} ({key}=)")
    return clean_term(term), settings


def format_entry(term: str, settings: dict[str, Any]) -> str:
    """The line of ``queries/<label>.txt`` for a term and its own settings (the inverse of split_entry)."""
    parts = [term]
    for key in ("engines", *QUERY_KEYS):
        if key in settings:
            value = settings[key]
            text = ",".join(value) if isinstance(value, list) else str(value).lower() if isinstance(value, bool) \
                else str(value)
            parts.append(f"{key}={text}")
    return " | ".join(parts)


def query_engines(settings: dict[str, Any], default: list[str]) -> list[str]:
    """A query's engines: its own, else the workspace's."""
    return list(settings.get("engines") or default)


def parse_entries(text: str, where: str = "a keyword list") -> dict[str, dict[str, Any]]:
    """Term -> its own settings, in file order: one per line; blank lines and ``#`` comments ignored; a term
    written twice keeps its first place and its last settings."""
    out: dict[str, dict[str, Any]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not clean_term(line) or clean_term(line).startswith("#"):
            continue
        term, settings = split_entry(line, f"{where}, line {n}")
        if term:
            out[term] = settings if term not in out or settings else out[term]
    return out


def parse_terms(text: str) -> list[str]:
    """Terms of a keyword list (their own settings left out): see :func:`parse_entries`."""
    return list(parse_entries(text))


def read_terms_file(path: Path) -> list[str]:
    """The lines of a keyword list, each ``term`` or ``term | key=value …`` (checked here, applied by add)."""
    try:
        return [format_entry(t, s) for t, s in read_entries(path).items()]
    except (OSError, UnicodeDecodeError) as exc:
        raise FacecurateError(f"Cannot read the keyword list {path}: {exc}. Pass a UTF-8 text file with one "
                              f"term per line.") from exc


def read_entries(path: Path) -> dict[str, dict[str, Any]]:
    try:
        return parse_entries(path.read_text(encoding="utf-8-sig"), str(path))
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
    pending = [format_entry(q.term, q.settings) for q in queries
               if any(is_pending(runs.get((q.id, e))) for e in query_engines(q.settings, engines))]
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
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # every term in the file: its own settings


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
        entries = read_entries(path)
        terms = list(entries)
        queries = catalog.tracked_queries(label)
        tracked = {q.term for q in queries}
        dropped: list[str] = []
        if label in labels:  # a file facecurate wrote before: pending lines deleted by hand are dropped
            runs = catalog.latest_runs(q.id for q in queries)
            keep = set(terms)
            dropped = [q.term for q in queries if q.term not in keep and
                       any(is_pending(runs.get((q.id, e))) for e in query_engines(q.settings, engines))]
        out.append(FileEdits(label, [t for t in terms if t not in tracked], dropped, entries))
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
            for term, settings in edits.settings.items():
                catalog.set_query_settings(edits.label, term, settings)
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
    entries: dict[str, dict[str, Any]] = {}
    for line in terms:  # `term | engines=… | limit=…` on the command line or in --file too
        term, settings = split_entry(line)
        if term:
            entries[term] = settings or entries.get(term, {})
    with catalog.transaction():
        for term, settings in entries.items():
            (added if catalog.add_query(label, term) or term in synced else known).append(term)
            if settings:
                catalog.set_query_settings(label, term, settings)
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
    settings: dict[str, Any] = field(default_factory=dict)  # its own engines, limit, filters ({}: the workspace's)

    @property
    def pending(self) -> bool:
        return any(p.state not in ("used", "skipped") for p in self.pairs)


@dataclass(frozen=True)
class _Untracked:
    """A term written into a mirror file by hand that no query row holds yet."""

    label: str
    term: str
    settings: dict[str, Any] = field(default_factory=dict)


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
        new = [_Untracked(e.label, t, e.settings.get(t, {})) for t in e.added if t not in removed]
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
    edits = file_edits(ws, catalog, configured)
    items = _with_edits(catalog, catalog.tracked_queries(label), edits, label)
    runs = catalog.latest_runs(q.id for q in items if isinstance(q, QueryRow))
    named = {e for q in items for e in q.settings.get("engines", [])} | \
        {e for ed in edits for s in ed.settings.values() for e in s.get("engines", [])}
    extra = [] if engines else sorted(named - set(configured))  # engines only some queries name
    shown = list(dict.fromkeys([*(engines or configured), *extra, *sorted({e for _, e in runs})]))
    out = []
    edited = {(e.label, t): s for e in edits for t, s in e.settings.items()}
    for q in items:
        settings = edited.get((q.label, q.term), q.settings)
        own = query_engines(settings, configured)
        if isinstance(q, _Untracked):
            out.append(QueryStatus(q.label, q.term, None, [PairStatus(e, "pending" if e in own else "skipped")
                                                           for e in shown], settings))
            continue
        pairs = []
        for e in shown:
            run = runs.get((q.id, e))
            if run is None and e not in own:
                pairs.append(PairStatus(e, "skipped"))
                continue
            if run is None:
                pairs.append(PairStatus(e, "pending"))
                continue
            state: PairState = "used" if run.state == "done" else run.state
            pairs.append(PairStatus(e, state, run.finished_at or run.started_at, catalog.run_counts(run.id)))
        out.append(QueryStatus(q.label, q.term, q.added_at, pairs, settings))
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
