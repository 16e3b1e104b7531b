"""``engines check`` and ``engines replay``: see that an engine still answers before a 3-hour run, and turn a
page that stopped a search into something a developer can read (and a test fixture).

``check`` runs one real search per engine for a harmless term through the same engine classes and the same
polite HTTP client as a crawl, then tries to download the first result: reached / blocked (CAPTCHA, consent,
403, 429) / parsed N results / first result downloadable. A failed check keeps the page under crawl_pages/,
as a crawl does. ``replay`` runs an engine's pure parser on a saved page, with no network at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from facecurate import media
from facecurate.catalog.queries import DownloadRow
from facecurate.crawl.download import Downloader
from facecurate.crawl.engines import ENGINES, Result, SearchStopped, bing, duckduckgo, google, naver, wikimedia
from facecurate.crawl.engines.base import LayoutError, looks_blocked
from facecurate.crawl.http import Http, HttpSettings
from facecurate.crawl.queries import configured_engines
from facecurate.crawl.stage import SAVED_PAGES, make_engine
from facecurate.errors import FacecurateError
from facecurate.workspace import Workspace

CHECK_TERM = "portrait"  # harmless, and every engine has thousands of results for it


@dataclass
class EngineCheck:
    """One engine's check. ``ok``: reached, not blocked, parsed at least one result, first one downloadable."""

    engine: str
    url: str | None = None
    reached: bool = False
    blocked: str | None = None      # captcha | consent | rate_limited | layout_changed | unreachable | browser …
    parsed: int = 0
    first_url: str | None = None
    downloadable: bool = False
    download_error: str | None = None
    saved_page: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.reached and self.blocked is None and self.parsed > 0 and self.downloadable


@dataclass
class CheckReport:
    """``engines check``: the term searched and one check per engine; ``ok`` only if every one passed."""

    term: str
    checks: list[EngineCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def _save(ws: Workspace, engine: str, text: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    rel = f"{SAVED_PAGES}/{engine}-check-{stamp}.html"
    media.atomic_write(ws.resolve(rel), text.encode("utf-8", errors="replace"), ws.tmp_dir)
    return str(ws.resolve(rel))


def check_engine(ws: Workspace, name: str, http: Http, term: str = CHECK_TERM) -> EngineCheck:
    """One search and one download for ``name``; never raises for what the engine answers."""
    out = EngineCheck(name)
    cfg = ws.config()
    engine = make_engine(ws, name, http)
    try:
        try:
            page = engine.search(term, {})
        except SearchStopped as stop:
            out.url, out.blocked, out.message = stop.url, stop.kind, stop.describe()
            out.reached = stop.kind not in ("unreachable", "browser")
            if stop.page_text:
                out.saved_page = _save(ws, name, stop.page_text)
                out.message = f"{stop.what} ({stop.kind}); the page is saved at {out.saved_page}. {stop.fix}"
            return out
        out.reached, out.parsed = True, len(page.results)
        if not page.results:
            out.message = "the engine answered, but with no results for a term that always has some"
            return out
        first = page.results[0]
        out.first_url = first.url
        row = DownloadRow(0, first.url, 1, first.page_url, first.title, first.license, first.author, name, term,
                          "check")
        with Downloader(http, int(cfg.get("media", "max_pixels")), int(cfg.get("media", "min_side")),
                        workers=1) as dl:
            got = dl.fetch(row)
        out.downloadable = got.ok
        out.download_error = None if got.ok else got.reason
        out.message = f"{len(page.results)} results; first downloadable" if got.ok else got.message
        return out
    finally:
        engine.close()


def check_engines(ws: Workspace, engines: list[str] | None = None, term: str = CHECK_TERM) -> CheckReport:
    """Check ``engines`` (default: every engine facecurate has, so a user sees which ones work today)."""
    names = engines or list(ENGINES)
    unknown = [e for e in names if e not in ENGINES]
    if unknown:
        raise FacecurateError(f"Unknown engine {', '.join(unknown)}: use {', '.join(ENGINES)}.")
    configured_engines(ws.config())  # a bad [crawl] engines stops here, as it would stop a crawl
    report = CheckReport(term)
    http = Http(HttpSettings.from_config(ws))
    try:
        for name in names:
            try:
                report.checks.append(check_engine(ws, name, http, term))
            except FacecurateError as exc:  # e.g. wikimedia without [crawl] contact
                report.checks.append(EngineCheck(name, blocked="config", message=str(exc)))
    finally:
        http.close()
    return report


# -- replay ----------------------------------------------------------------------------------------------


@dataclass
class Replayed:
    """What an engine's parser finds in a saved page; ``verdict``: results | empty | captcha | consent |
    layout_changed (the same words a stopped search uses)."""

    engine: str
    page: str
    verdict: str
    results: list[Result]
    error: str | None = None


def parse_page(engine: str, text: str) -> Replayed:
    """Run ``engine``'s pure parser on ``text``. Pure: no network, no workspace."""
    results: list[Result] = []
    error: str | None = None
    try:
        if engine == "bing":
            results = bing.parse_results(text)
        elif engine == "duckduckgo":
            if text.lstrip().startswith("{"):
                results, _ = duckduckgo.parse_results(text)
            elif duckduckgo.parse_vqd(text) is None:
                raise LayoutError("neither i.js JSON nor a page with a vqd token")
        elif engine in ("google", "google-browser"):
            results = google.parse_results(text)
        elif engine == "naver":
            results = naver.parse_results(text)
        elif engine == "wikimedia":
            results, _ = wikimedia.parse_results(text, thumbs=True)
        else:
            raise FacecurateError(f"Unknown engine {engine}: use {', '.join(ENGINES)}.")
    except LayoutError as exc:
        error = str(exc)
    if results:
        verdict = "results"
    else:
        blocked = looks_blocked(text)
        empty = not text.strip() or (engine == "bing" and bing.has_container(text)) or \
            (engine in ("google", "google-browser") and google.has_container(text))
        verdict = blocked or ("empty" if empty and error is None else "layout_changed")
    return Replayed(engine, "", verdict, results, error)


def replay(path: Path, engine: str) -> Replayed:
    """``parse_page`` on a saved file (a crawl_pages/ page, or a fixture)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise FacecurateError(f"Cannot read {path}: {exc}. Pass a page saved under crawl_pages/.") from exc
    out = parse_page(engine.strip().lower(), text)
    out.page = str(path)
    return out
