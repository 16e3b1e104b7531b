"""Tracked queries, their runs per engine, the URL frontier and the hits that point at it (crawl state)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from facecurate.catalog.base import CatalogBase, utc_now

RunState = Literal["running", "done", "blocked"]
UrlState = Literal["ok", "failed"]

RUN_COLUMNS = "id, query_id, engine, state, cursor, target, empty_pages, started_at, finished_at, error, saved_page"


@dataclass(frozen=True)
class QueryRow:
    """A tracked term; ``settings`` are its own (engines, limit, filters), empty when it uses the workspace's."""

    id: int
    label: str
    term: str
    added_at: str
    settings: dict[str, Any] = field(default_factory=dict)


def _query(row: sqlite3.Row) -> QueryRow:
    values = dict(row)
    values["settings"] = json.loads(values.get("settings") or "{}")
    return QueryRow(**values)


@dataclass(frozen=True)
class RunRow:
    """One crawl of one (query, engine) pair; ``cursor`` is the engine's JSON resume state."""

    id: int
    query_id: int
    engine: str
    state: RunState
    cursor: dict[str, Any]
    target: int
    empty_pages: int
    started_at: str
    finished_at: str | None
    error: str | None
    saved_page: str | None


@dataclass(frozen=True)
class RunCounts:
    """What one run's hits came to, read back from the catalog (so a resumed run reports all of it)."""

    found: int = 0
    new: int = 0
    duplicate: int = 0
    pending: int = 0
    failed_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def failed_count(self) -> int:
        return sum(self.failed_by_reason.values())


@dataclass(frozen=True)
class UrlFailure:
    """A hit of a run whose URL could not be stored: the URL and the message recorded for it."""

    url: str
    message: str


def _run(row: sqlite3.Row) -> RunRow:
    values = dict(row)
    values["cursor"] = json.loads(values["cursor"] or "{}")
    return RunRow(**values)


@dataclass(frozen=True)
class DownloadRow:
    """A URL to fetch with the provenance of the hit that asked for it."""

    url_id: int
    url: str
    rank: int
    page_url: str | None
    title: str | None
    license: str | None
    author: str | None
    engine: str
    query: str
    label: str


class QueriesMixin(CatalogBase):
    def add_query(self, label: str, term: str) -> bool:
        """Track a term under a label (or bring back a removed one); False when it was already tracked."""
        row = self.conn.execute("SELECT id, removed_at FROM queries WHERE label=? AND term=?",
                                (label, term)).fetchone()
        if row is None:
            self.conn.execute("INSERT INTO queries (label, term, added_at) VALUES (?,?,?)", (label, term, utc_now()))
            return True
        if row["removed_at"] is not None:
            self.conn.execute("UPDATE queries SET removed_at=NULL WHERE id=?", (row["id"],))
            return True
        return False

    def remove_query(self, label: str, term: str) -> bool:
        cur = self.conn.execute("UPDATE queries SET removed_at=? WHERE label=? AND term=? AND removed_at IS NULL",
                                (utc_now(), label, term))
        return cur.rowcount > 0

    def tracked_queries(self, label: str | None = None) -> list[QueryRow]:
        where, params = ("AND label=?", (label,)) if label else ("", ())
        rows = self.conn.execute(f"SELECT id, label, term, added_at, settings FROM queries WHERE removed_at IS NULL "
                                 f"{where} ORDER BY label, id", params).fetchall()
        return [_query(r) for r in rows]

    def removed_queries(self, label: str) -> dict[str, QueryRow]:
        """Terms of ``label`` that were tracked once and removed, by term: adding one back brings back its
        id, date and runs, so a preview of the edit must show those."""
        rows = self.conn.execute("SELECT id, label, term, added_at, settings FROM queries WHERE label=? AND "
                                 "removed_at IS NOT NULL ORDER BY id", (label,)).fetchall()
        return {r["term"]: _query(r) for r in rows}

    def set_query_settings(self, label: str, term: str, settings: dict[str, Any]) -> bool:
        """Replace a tracked term's own settings; False when they were already these."""
        cur = self.conn.execute("UPDATE queries SET settings=? WHERE label=? AND term=? AND settings<>?",
                                (json.dumps(settings, sort_keys=True), label, term,
                                 json.dumps(settings, sort_keys=True)))
        return cur.rowcount > 0

    def query_labels(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT DISTINCT label FROM queries ORDER BY label")]

    def query_file_hash(self, label: str) -> str | None:
        row = self.conn.execute("SELECT sha256 FROM query_files WHERE label=?", (label,)).fetchone()
        return row[0] if row else None

    def set_query_file_hash(self, label: str, sha256: str) -> None:
        self.conn.execute("INSERT INTO query_files (label, sha256) VALUES (?,?) "
                          "ON CONFLICT(label) DO UPDATE SET sha256=excluded.sha256", (label, sha256))

    def latest_runs(self, query_ids: Iterable[int] | None = None) -> dict[tuple[int, str], RunRow]:
        """The newest run of each (query, engine): its state says pending, running, blocked or used."""
        rows = self.conn.execute(
            f"SELECT {RUN_COLUMNS} FROM query_runs WHERE id IN "
            "(SELECT MAX(id) FROM query_runs GROUP BY query_id, engine)").fetchall()
        wanted = set(query_ids) if query_ids is not None else None
        return {(r["query_id"], r["engine"]): _run(r) for r in rows
                if wanted is None or r["query_id"] in wanted}

    def start_run(self, query_id: int, engine: str, target: int) -> RunRow:
        cur = self.conn.execute(
            "INSERT INTO query_runs (query_id, engine, state, target, started_at) VALUES (?,?,'running',?,?)",
            (query_id, engine, target, utc_now()))
        return self.run(int(cur.lastrowid or 0))

    def run(self, run_id: int) -> RunRow:
        return _run(self.conn.execute(f"SELECT {RUN_COLUMNS} FROM query_runs WHERE id=?", (run_id,)).fetchone())

    def resume_run(self, run_id: int, target: int) -> RunRow:
        """An interrupted or blocked run continues from its cursor, with the current --limit."""
        self.conn.execute("UPDATE query_runs SET state='running', target=?, error=NULL, saved_page=NULL "
                          "WHERE id=?", (target, run_id))
        return self.run(run_id)

    def save_cursor(self, run_id: int, cursor: dict[str, Any], empty_pages: int) -> None:
        self.conn.execute("UPDATE query_runs SET cursor=?, empty_pages=? WHERE id=?",
                          (json.dumps(cursor, ensure_ascii=False), empty_pages, run_id))

    def finish_run(self, run_id: int, state: RunState, error: str | None = None, saved_page: str | None = None) -> None:
        self.conn.execute("UPDATE query_runs SET state=?, error=?, saved_page=?, finished_at=? WHERE id=?",
                          (state, error, saved_page, utc_now(), run_id))

    def add_hit(self, run_id: int, norm_url: str, url: str, rank: int, page_url: str | None, title: str | None,
                license: str | None, author: str | None, retry_reasons: frozenset[str]) -> str | None:
        """Record one search result; returns the URL's state for this run (None when the run already had it).

        A URL fetched before is not fetched again: its hit is settled at once as a duplicate (or as the old
        failure). A failure that may pass (timeout, 5xx, 429) is put back to pending instead.
        """
        self.conn.execute("INSERT INTO frontier (norm_url, url) VALUES (?,?) ON CONFLICT(norm_url) DO NOTHING",
                          (norm_url, url))
        front = self.conn.execute("SELECT id, state, error FROM frontier WHERE norm_url=?", (norm_url,)).fetchone()
        state = front["state"]
        if state == "failed" and front["error"] in retry_reasons:
            self.conn.execute("UPDATE frontier SET state='pending' WHERE id=?", (front["id"],))
            state = "pending"
        outcome = {"ok": "duplicate", "failed": "failed"}.get(state)
        cur = self.conn.execute(
            "INSERT INTO hits (run_id, url_id, rank, page_url, title, license, author, outcome) "
            "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(run_id, url_id) DO NOTHING",
            (run_id, front["id"], rank, page_url, title, license, author, outcome))
        return state if cur.rowcount else None

    def run_hit_count(self, run_id: int) -> int:
        return self._scalar("SELECT COUNT(*) FROM hits WHERE run_id=?", (run_id,))

    def pending_downloads(self, run_id: int, after_rank: int = 0) -> list[DownloadRow]:
        """Hits of this run whose URL is still to fetch (after a kill, exactly the ones in flight).

        ``after_rank``: only hits ranked after it, i.e. the page just recorded (ranks grow page by page), so a
        crawl of N results reads each pending row once instead of all of them again after every page."""
        rows = self.conn.execute(
            "SELECT f.id AS url_id, f.url, h.rank, h.page_url, h.title, h.license, h.author, r.engine, "
            "q.term AS query, q.label FROM hits h JOIN frontier f ON f.id=h.url_id "
            "JOIN query_runs r ON r.id=h.run_id JOIN queries q ON q.id=r.query_id "
            "WHERE h.run_id=? AND h.rank>? AND h.outcome IS NULL AND f.state='pending' ORDER BY h.rank",
            (run_id, after_rank)).fetchall()
        return [DownloadRow(**r) for r in rows]

    def settle_url(self, url_id: int, *, state: UrlState, image_id: int | None, is_new: bool, error: str | None,
                   http_status: int | None) -> None:
        """Mark a fetched URL ok or failed and settle every hit still waiting on it; call inside a transaction."""
        self.conn.execute("UPDATE frontier SET state=?, image_id=?, error=?, http_status=?, attempts=attempts+1, "
                          "fetched_at=? WHERE id=?", (state, image_id, error, http_status, utc_now(), url_id))
        first = self.conn.execute("SELECT MIN(id) FROM hits WHERE url_id=? AND outcome IS NULL",
                                  (url_id,)).fetchone()[0]
        if state == "ok":
            self.conn.execute("UPDATE hits SET outcome=CASE WHEN id=? AND ? THEN 'new' ELSE 'duplicate' END "
                              "WHERE url_id=? AND outcome IS NULL", (first, is_new, url_id))
        else:
            self.conn.execute("UPDATE hits SET outcome='failed' WHERE url_id=? AND outcome IS NULL", (url_id,))

    def run_counts(self, run_id: int) -> RunCounts:
        """found / new / duplicate / pending and failures by reason, from the hits (right after a resume too)."""
        row = self.conn.execute(
            "SELECT COUNT(*) AS found, SUM(outcome='new') AS new, SUM(outcome='duplicate') AS duplicate, "
            "SUM(outcome IS NULL) AS pending FROM hits WHERE run_id=?", (run_id,)).fetchone()
        reasons = {r["error"] or "failed": int(r["n"]) for r in self.conn.execute(
            "SELECT f.error, COUNT(*) AS n FROM hits h JOIN frontier f ON f.id=h.url_id "
            "WHERE h.run_id=? AND h.outcome='failed' GROUP BY f.error ORDER BY n DESC", (run_id,))}
        return RunCounts(found=int(row["found"] or 0), new=int(row["new"] or 0),
                         duplicate=int(row["duplicate"] or 0), pending=int(row["pending"] or 0),
                         failed_by_reason=reasons)

    def run_failures(self, run_id: int) -> list[UrlFailure]:
        """The failed hits of a run in rank order, with the message stored when their URL failed (this run or
        an earlier one: a URL that failed for good is not fetched again)."""
        rows = self.conn.execute(
            "SELECT f.url, COALESCE(s.detail, f.error, 'failed') AS message FROM hits h "
            "JOIN frontier f ON f.id=h.url_id LEFT JOIN sources s ON s.kind='url' AND s.location=f.url "
            "WHERE h.run_id=? AND h.outcome='failed' ORDER BY h.rank", (run_id,)).fetchall()
        return [UrlFailure(str(r["url"]), str(r["message"])) for r in rows]
