"""The one interface every search engine implements, and the error that stops a search loudly.

An engine turns (term, cursor) into one :class:`Page` of results plus the cursor of the next page. Parsing is
a pure function per engine over the response text, so it is tested on fixture shapes without a network; the
engine class only builds URLs, fetches through the shared polite :class:`~facecurate.crawl.http.Http`, and
decides whether an empty answer means "no more results" or "blocked / layout changed" (then it raises
:class:`SearchStopped` with the page, which the crawl saves under the workspace).
"""

from __future__ import annotations

import html
import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, ClassVar

from facecurate.crawl.http import Fetched, Http, browser_headers
from facecurate.errors import FacecurateError
from facecurate.workspace import Workspace, options_from


@dataclass(frozen=True)
class Result:
    """One image result as the engine describes it (provenance fields are None where it gives none)."""

    url: str
    page_url: str | None = None
    title: str | None = None
    width: int | None = None
    height: int | None = None
    license: str | None = None
    author: str | None = None
    thumbnail: str | None = None

    def __post_init__(self) -> None:
        """Every field as the catalog stores it, whatever the engine answered: a number where a title belongs or
        a list where a page URL belongs is dropped (None), a width past any integer column is unknown, and lone
        surrogates (a JSON ``\\ud800`` escape; SQLite refuses them) are replaced, so no answer crashes the crawl."""
        set_ = object.__setattr__
        set_(self, "url", as_text(self.url, None) or "")
        for name in ("page_url", "thumbnail"):
            set_(self, name, as_text(getattr(self, name), MAX_URL, cut=False))
        for name in ("title", "license", "author"):
            set_(self, name, as_text(getattr(self, name), MAX_TEXT))
        set_(self, "width", as_int(self.width))
        set_(self, "height", as_int(self.height))


MAX_TEXT = 2000   # characters of a title, licence or author kept (longer is junk, or a page bloating the catalog)
MAX_URL = 16_384  # a page or thumbnail URL longer than this is dropped, not cut (a cut URL names something else)


def as_text(value: Any, limit: int | None, cut: bool = True) -> str | None:
    """``value`` if it is text (lone surrogates replaced by U+FFFD, cut to ``limit``, or None past it when not
    ``cut``); None for anything else an engine may put in a text field (numbers, lists, objects, null). Pure."""
    if not isinstance(value, str) or not value:
        return None
    text: str = value
    if limit is not None and len(text) > limit:
        if not cut:
            return None
        text = text[:limit]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def load_json(text: str, what: str) -> Any:
    """``text`` as JSON, or LayoutError saying ``what`` did not answer JSON. Nesting deeper than the parser's
    recursion limit and integers of more digits than Python converts are an engine's junk too, not a crash."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise LayoutError(f"{what} did not answer JSON ({str(exc)[:200]})") from None


@dataclass(frozen=True)
class Page:
    """One result page: its results in rank order, the cursor for the next page, and whether it was the last."""

    results: list[Result]
    cursor: dict[str, Any]
    end: bool = False


class LayoutError(ValueError):
    """Raised by a pure parser when the text does not have the shape it knows (not the same as 'no results')."""


# Why a search stopped, and what the user can do about it.
STOP_FIXES: dict[str, str] = {
    "captcha": "The engine suspects automation and shows a CAPTCHA: wait (an hour or more), slow down "
               "([crawl] page_delay), then run `facecurate crawl` again; it resumes where it stopped.",
    "consent": "A cookie-consent page stands in the way: try another engine, or point [engines.{engine}] "
               "base_url at a regional host that does not ask.",
    "rate_limited": "The engine refuses requests for now: wait, raise [crawl] page_delay, then run `facecurate "
                    "crawl` again; it resumes where it stopped.",
    "layout_changed": "The engine's page no longer has the structure facecurate reads: its parser "
                      "(facecurate/crawl/engines/{engine}.py) needs an update; please report it with the saved page.",
    "unreachable": "Check the network and [engines.{engine}] base_url, then run `facecurate crawl` again.",
    "api_error": "The API refused the request; read the saved answer, fix the term or settings, and run again.",
    "browser": "Check [crawl] chromium and chromedriver (Debian: apt-get install chromium chromium-driver).",
}


class SearchStopped(FacecurateError):
    """A search could not go on: blocked, CAPTCHA, consent wall, changed layout, or no answer.

    Never reported as "0 images, done": the run stays pending (resumable), the page is saved, exit code 3.
    """

    exit_code = 3

    def __init__(self, engine: str, kind: str, what: str, url: str, page_text: str | None = None) -> None:
        self.engine, self.kind, self.what, self.url, self.page_text = engine, kind, what, url, page_text
        self.saved_page: str | None = None
        super().__init__(self.describe())

    @property
    def fix(self) -> str:
        return STOP_FIXES.get(self.kind, STOP_FIXES["unreachable"]).format(engine=self.engine)

    def describe(self) -> str:
        saved = f" The page is saved at {self.saved_page}." if self.saved_page else ""
        return (f"{self.engine}: {self.what} ({self.kind}) at {self.url}.{saved} {self.fix} "
                f"`facecurate engines check --engine {self.engine}` tells whether it answers now.")


@dataclass(frozen=True)
class BrowserSettings:
    """The [crawl] settings of engines that drive Chromium (google); defaults live in the settings table."""

    chromium: str
    chromedriver: str
    browser_timeout: float
    scroll_wait: float

    @classmethod
    def from_config(cls, ws: Workspace) -> BrowserSettings:
        return options_from(cls, ws.config(), "crawl")


@dataclass
class EngineContext:
    """What an engine needs from the crawl: the shared HTTP client and its settings."""

    http: Http
    base_url: str
    search_user_agent: str
    identifiable_user_agent: str
    browser: BrowserSettings
    options: dict[str, Any] = field(default_factory=dict)  # the engine's [engines.<name>] section, checked


class Engine(ABC):
    """One search engine. Subclasses set ``name`` and implement :meth:`search`."""

    name: ClassVar[str]

    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx
        self.base_url = ctx.base_url.rstrip("/")

    @abstractmethod
    def search(self, term: str, cursor: dict[str, Any]) -> Page:
        """The page of results at ``cursor`` (``{}`` = the first page)."""

    def close(self) -> None:
        """Release what the engine holds (the browser for google)."""
        return None

    def fetch_page(self, url: str, *, referer: str | None = None, accept: str | None = None,
                   user_agent: str | None = None, headers: dict[str, str] | None = None,
                   accept_language: bool = True) -> Fetched:
        """GET a result page; HTTP refusals become :class:`SearchStopped` with the answer attached.

        ``headers`` are added to the browser's; ``accept_language=False`` leaves that header out (DuckDuckGo
        blocks image requests that carry it since May 2026). A redirect to ``/sorry/`` is a CAPTCHA whatever
        the page it lands on says."""
        sent = browser_headers(user_agent or self.ctx.search_user_agent, referer, accept)
        if not accept_language:
            sent.pop("Accept-Language", None)
        sent.update(headers or {})
        fetched = self.ctx.http.get(url, headers=sent, respect_robots=False, session=True)
        text = fetched.text() if fetched.body else None
        if "/sorry/" in (fetched.final_url or ""):
            raise self.stopped("captcha", "the engine redirected to its /sorry/ CAPTCHA page",
                               fetched.final_url or url, text)
        if fetched.ok and fetched.status == 200:
            return fetched
        if fetched.status in (202, 403, 418, 429) or fetched.reason == "rate_limited":
            kind = "captcha" if text and looks_blocked(text) else "rate_limited"
            raise self.stopped(kind, f"HTTP {fetched.status}: the engine refused the request", url, text)
        if fetched.status is None or (fetched.status == 200 and fetched.message):
            # no answer, or a 200 that was not read: past [crawl] max_bytes, too slow; the message says which
            raise self.stopped("unreachable", fetched.message or "no answer", url, text)
        raise self.stopped("unreachable", f"HTTP {fetched.status} instead of a result page", url, text)

    def stopped(self, kind: str, what: str, url: str, text: str | None) -> SearchStopped:
        return SearchStopped(self.name, kind, what, url, text)

    def empty_page(self, text: str, url: str, first_page: bool, has_container: bool) -> Page:
        """Zero results: CAPTCHA/consent text is a block; a first page without the results container is a
        changed layout; otherwise the engine simply has nothing more."""
        kind = looks_blocked(text)
        if kind:
            raise self.stopped(kind, "a block page came instead of results", url, text)
        if first_page and not has_container:
            raise self.stopped("layout_changed", "the page holds no results and none of the markers of an "
                               "empty result list", url, text)
        return Page([], {}, end=True)


_BLOCK_MARKERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("captcha", re.compile(r"captcha|/sorry/|unusual traffic|are you a robot|verify you are human|"
                           r"anomaly-modal|challenge-form", re.IGNORECASE)),
    ("consent", re.compile(r"consent\.(google|yahoo)\.|before you continue|cookie consent", re.IGNORECASE)),
)


def looks_blocked(text: str) -> str | None:
    """``captcha`` or ``consent`` when the text is a block page; None otherwise. Only asked about pages
    that yielded no results, so a result titled 'captcha' cannot stop a search."""
    for kind, pattern in _BLOCK_MARKERS:
        if pattern.search(text):
            return kind
    return None


_TAG = re.compile(r"<[^<>]+>")  # not [^>]: a run of "<" without ">" would be scanned to its end from each one


def strip_tags(value: Any) -> str | None:
    """Plain text from an HTML fragment (titles and Wikimedia artists come as HTML); None for a value that is
    not text (an engine's number, list or null)."""
    if not isinstance(value, str):
        return None
    text = " ".join(html.unescape(_TAG.sub(" ", value)).split())
    return text or None


def as_int(value: Any) -> int | None:
    """A whole number an SQLite column holds, from an engine's field; None for anything else (infinity from
    ``1e999``, a number of thousands of digits, a list)."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if -2**63 <= number < 2**63 else None


# Elements that never hold others in BeautifulSoup's html.parser tree (written out rather than read from bs4,
# whose import costs ~45 ms of a crawl's start; tests/test_crawl_parsers.py checks they match).
VOID = frozenset({"area", "base", "basefont", "bgsound", "br", "col", "command", "embed", "frame", "hr", "image",
                  "img", "input", "isindex", "keygen", "link", "menuitem", "meta", "nextid", "param", "source",
                  "spacer", "track", "wbr"})
# Open elements summed over a page's elements and texts: ~0.5 s of BeautifulSoup's tree building. Real result
# pages cost thousands (Bing's one-result answer in ../shared/fixtures 220, Google's feature-phone page 110).
TREE_WORK = 20_000_000


class _TreeWork(HTMLParser):
    """Adds up the open elements at each element and piece of text of a page, nesting as BeautifulSoup's
    html.parser tree does (an end tag closes up to the latest open element of its name; void ones never
    open); stops once past ``budget``. Each step costs the same however deep the page nests."""

    def __init__(self, budget: int) -> None:
        super().__init__(convert_charrefs=True)
        self.budget, self.work = budget, 0
        self._open: list[str] = []
        self._names: dict[str, int] = {}

    def _add(self) -> None:
        self.work += len(self._open) + 1
        if self.work > self.budget:
            raise _TooDeep

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._add()
        if tag not in VOID:
            self._open.append(tag)
            self._names[tag] = self._names.get(tag, 0) + 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._add()

    def handle_endtag(self, tag: str) -> None:
        if not self._names.get(tag):
            return
        while self._open:
            name = self._open.pop()
            self._names[name] -= 1
            if name == tag:
                return

    def handle_data(self, data: str) -> None:
        self._add()


class _TooDeep(Exception):
    pass


def tree_affordable(text: str, budget: int = TREE_WORK) -> bool:
    """Whether BeautifulSoup can build ``text``'s tree in reasonable time. Its tree builder walks up the open
    elements for each element and piece of text it adds, so a page of a few MB nesting thousands of elements
    around thousands of others takes hours, past any deadline; such a page is no engine's result page."""
    counter = _TreeWork(budget)
    try:
        counter.feed(text)
        counter.close()
    except _TooDeep:
        return False
    return True
