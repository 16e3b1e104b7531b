"""Downloads as an executor's work (``run --executor ray``): one web host's URLs per group, fetched in order.

A group is one host's pending URLs, cut in batches of the crawl's commit size; an executor runs a group's
batches one after the other on one worker (:meth:`facecurate.work.Executor.map_groups`), so one host is served
by one worker at a time, under the same [crawl] per_host cap, rate, retries and backoff, and the same
per-host caps the engines set (Wikimedia's), wherever the worker runs. The worker fetches, validates and
writes each file at its content address in [run] storage (atomically) and hands back its hash, size and
format, never its bytes; the crawl stage records each batch as it arrives.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import pyarrow as pa

from facecurate import media, result_arrow
from facecurate.catalog import DownloadRow
from facecurate.crawl.download import Downloaded, Downloader
from facecurate.crawl.http import Fetched, Http, HttpSettings
from facecurate.crawl.urls import host_key
from facecurate.filestore import open_at
from facecurate.storage import put_raw
from facecurate.work import ArrowResults

ROW_TYPE = pa.struct([
    ("url_id", pa.int64()), ("url", pa.string()), ("rank", pa.int64()), ("page_url", pa.string()),
    ("title", pa.string()), ("license", pa.string()), ("author", pa.string()), ("engine", pa.string()),
    ("query", pa.string()), ("label", pa.string()),
])
FETCHED_TYPE = pa.struct([
    ("url", pa.string()), ("status", pa.int64()), ("body", pa.binary()), ("final_url", pa.string()),
    ("headers", pa.map_(pa.string(), pa.string())), ("reason", pa.string()), ("message", pa.string()),
    ("attempts", pa.int64()),
])
# One row per URL: the row it was asked as (each result says which item it is: a host's batches arrive
# interleaved with other hosts'), the HTTP outcome, and the validated file's facts, or the reason code and
# message of a failure. ``data`` is null from a worker, which has written the file to [run] storage by its
# hash; ``size`` is its length.
RESULT_SCHEMA = pa.schema([
    ("row", ROW_TYPE), ("fetched", FETCHED_TYPE), ("data", pa.binary()), ("sha256", pa.string()),
    ("format", pa.string()), ("ext", pa.string()), ("width", pa.int64()), ("height", pa.int64()),
    ("reason", pa.string()), ("message", pa.string()), ("size", pa.int64()),
])
_ROW_FIELDS = [f.name for f in fields(DownloadRow)]
_FETCHED_FIELDS = [f.name for f in fields(Fetched)]
_PLAIN_FIELDS = [f.name for f in fields(Downloaded) if f.name not in ("row", "fetched")]


def _fetched(f: Fetched) -> dict[str, Any]:
    out = {k: getattr(f, k) for k in _FETCHED_FIELDS}
    out["headers"] = list(f.headers.items())
    return out


def results_to_arrow(done: list[Downloaded]) -> pa.Table:
    """One batch's downloads as a table of :data:`RESULT_SCHEMA`, one row per URL."""
    cols: dict[str, list[Any]] = {"row": [{k: getattr(d.row, k) for k in _ROW_FIELDS} for d in done],
                                  "fetched": [_fetched(d.fetched) for d in done]}
    for name in _PLAIN_FIELDS:
        cols[name] = [getattr(d, name) for d in done]
    return result_arrow.table(RESULT_SCHEMA, cols)


def results_from_arrow(table: pa.Table) -> list[Downloaded]:
    """The downloads :func:`results_to_arrow` was given, equal field for field (headers in their order)."""
    cols = result_arrow.columns(table, RESULT_SCHEMA)
    out = []
    for i, (row, fetched) in enumerate(zip(cols["row"], cols["fetched"], strict=True)):
        fetched["headers"] = dict(fetched["headers"] or ())
        out.append(Downloaded(DownloadRow(**row), Fetched(**fetched), **{k: cols[k][i] for k in _PLAIN_FIELDS}))
    return out


RESULTS: ArrowResults[Downloaded] = ArrowResults(RESULT_SCHEMA, results_to_arrow, results_from_arrow)


class DownloadWork:
    """Fetch one batch of one host's URLs on a worker; the HTTP client is built once per worker and kept."""

    name = "download"
    gpus = 0.0
    results = RESULTS

    def __init__(self, root: str, settings: HttpSettings, trusted: list[tuple[str, int]],
                 caps: dict[str, tuple[int, float]], max_pixels: int, min_side: int, decode_budget: float,
                 storage: str = "") -> None:
        self.root, self.settings, self.trusted, self.caps = root, settings, trusted, caps
        self.max_pixels, self.min_side, self.decode_budget = max_pixels, min_side, decode_budget
        self.storage = storage
        self._downloader: Downloader | None = None

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_downloader": None}

    def __call__(self, rows: list[DownloadRow], /) -> list[Downloaded]:
        if self._downloader is None:
            http = Http(self.settings)
            http.adopt(self.trusted, self.caps)
            files = open_at(self.root, self.storage)

            def prewrite(d: Downloaded) -> None:
                if d.data is not None and d.sha256:
                    put_raw(files, d.data, d.sha256, d.ext or "bin")

            self._downloader = Downloader(http, self.max_pixels, self.min_side, prewrite=prewrite,
                                          budget=media.PixelBudget(self.decode_budget))
        done = {d.row.url_id: d for d in self._downloader.run(rows)}
        # the bytes are in storage already (storage.store() records them from their hash, size and format)
        return [replace(done[r.url_id], data=None, fetched=replace(done[r.url_id].fetched, body=None)) for r in rows]


    def close(self) -> None:
        if self._downloader is not None:
            self._downloader.close()
            self._downloader = None


def host_groups(rows: list[DownloadRow], batch: int) -> list[list[list[DownloadRow]]]:
    """The rows by host (first-seen order), each host's cut in batches of ``batch``."""
    by_host: dict[str, list[DownloadRow]] = {}
    for row in rows:
        by_host.setdefault(host_key(row.url), []).append(row)
    return [[rows[i:i + batch] for i in range(0, len(rows), batch)] for rows in by_host.values()]
