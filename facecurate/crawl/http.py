"""Polite, bounded HTTP for result pages and image hosts.

One :class:`Http` per crawl: pooled ``requests`` sessions (one per thread, so connections are reused without
sharing a session across threads), a per-host gate (concurrency cap plus spacing of request starts), timeouts on
connect, on each read and on the whole body, a byte cap, and retries with exponential backoff and jitter that
honour ``Retry-After``. Every outcome is a :class:`Fetched` with a short reason code and a message that names the
URL and what to do, never an exception, so one bad host cannot stop a crawl.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter

from facecurate import __version__
from facecurate.crawl.urls import host_key
from facecurate.workspace import Workspace, options_from

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# Failures worth another try on a later crawl; the rest (404, robots, not an image…) are final.
TRANSIENT = frozenset({"timeout", "connection", "truncated", "http_429", "http_500", "http_502", "http_503",
                       "http_504", "rate_limited"})
ROBOTS_OPT_OUT = ("noai", "noimageai")
CHUNK = 64 * 1024


def identifiable_user_agent(contact: str) -> str:
    """facecurate's own agent: site owners can see who fetches and how to reach them."""
    who = f"contact: {contact}" if contact else "no contact set: [crawl] contact in facecurate.toml"
    return f"facecurate/{__version__} (face dataset curation; {who}) python-requests/{requests.__version__}"


@dataclass(frozen=True)
class HttpSettings:
    """The [crawl] settings the client obeys; each default and its reason live in the settings table."""

    contact: str
    concurrency: int
    per_host: int
    per_host_rate: float
    connect_timeout: float
    read_timeout: float
    total_timeout: float
    retries: int
    backoff: float
    backoff_max: float
    retry_after_max: float
    max_bytes: int
    max_redirects: int

    @property
    def user_agent(self) -> str:
        return identifiable_user_agent(self.contact)

    @classmethod
    def from_config(cls, ws: Workspace, **overrides: object) -> HttpSettings:
        """A workspace's [crawl] settings, with overrides on top (None: not given)."""
        return options_from(cls, ws.config(), "crawl", **overrides)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now)


def backoff_delay(attempt: int, base: float, cap: float, jitter: float) -> float:
    """Exponential backoff with jitter in [0.5, 1.0) of the step, so retrying clients spread out."""
    return min(cap, base * 2.0 ** attempt) * (0.5 + 0.5 * jitter)


def robots_opt_out(header: str | None) -> str | None:
    """The directive of an ``X-Robots-Tag`` that forbids AI use (``noai``/``noimageai``), if any."""
    if not header:
        return None
    tokens = set(re.findall(r"[a-z0-9_-]+", header.lower()))
    return next((d for d in ROBOTS_OPT_OUT if d in tokens), None)


class HostGate:
    """At most ``per_host`` requests in flight per host, and request starts spaced by ``1 / rate``."""

    def __init__(self, per_host: int, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._per_host = max(1, per_host)
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._next: dict[str, float] = {}

    @contextmanager
    def slot(self, host: str) -> Iterator[None]:
        with self._lock:
            sem = self._slots.setdefault(host, threading.BoundedSemaphore(self._per_host))
        with sem:
            with self._lock:
                now = self._clock()
                start = max(now, self._next.get(host, now))
                self._next[host] = start + self._interval
            if start > now:
                self._sleep(start - now)
            yield

    def defer(self, host: str, seconds: float) -> None:
        """A host that answered Retry-After gets no request from any thread before that time."""
        with self._lock:
            self._next[host] = max(self._next.get(host, 0.0), self._clock() + seconds)


@dataclass
class Fetched:
    """The outcome of one URL: ``reason`` is None on success, else a short code stored in the catalog."""

    url: str
    status: int | None = None
    body: bytes | None = None
    final_url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    message: str = ""
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.reason is None

    def text(self) -> str:
        """Body as text: the charset the server named, else UTF-8 (engines answer UTF-8)."""
        ctype = self.headers.get("content-type", "")
        charset = "utf-8"
        if "charset=" in ctype:
            charset = ctype.split("charset=", 1)[1].split(";")[0].strip().strip('"') or "utf-8"
        try:
            return (self.body or b"").decode(charset, errors="replace")
        except LookupError:
            return (self.body or b"").decode("utf-8", errors="replace")


class _Retry(Exception):
    def __init__(self, fetched: Fetched, wait: float | None = None) -> None:
        self.fetched, self.wait = fetched, wait


class Http:
    """Thread-safe GETs with the politeness and failure rules above."""

    def __init__(self, settings: HttpSettings, *, sleep: Callable[[float], None] = time.sleep,
                 rng: Callable[[], float] = random.random) -> None:
        self.settings = settings
        self.gate = HostGate(settings.per_host, settings.per_host_rate, sleep=sleep)
        self._sleep, self._rng = sleep, rng
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            size = max(self.settings.concurrency, self.settings.per_host)
            adapter = HTTPAdapter(pool_connections=size, pool_maxsize=size, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.max_redirects = self.settings.max_redirects
            session.headers["User-Agent"] = self.settings.user_agent
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            for s in self._sessions:
                s.close()
            self._sessions.clear()

    def get(self, url: str, headers: dict[str, str] | None = None, max_bytes: int | None = None,
            respect_robots: bool = True) -> Fetched:
        """GET ``url`` with retries; never raises for network or HTTP trouble."""
        s = self.settings
        cap = max_bytes or s.max_bytes
        last = Fetched(url, reason="connection", message=f"{url}: not fetched.")
        for attempt in range(s.retries + 1):
            try:
                with self.gate.slot(host_key(url)):
                    result = self._once(url, headers or {}, cap, respect_robots)
                result.attempts = attempt + 1
                return result
            except _Retry as retry:
                last = retry.fetched
                last.attempts = attempt + 1
                if attempt == s.retries:
                    break
                wait = retry.wait
                if wait is not None and wait > s.retry_after_max:
                    last.reason = "rate_limited"
                    last.message = (f"{url}: the host asks to wait {wait:.0f} s (Retry-After), longer than "
                                    f"[crawl] retry_after_max = {s.retry_after_max:.0f} s; left for a later "
                                    f"crawl, which retries it.")
                    return last
                if wait is None:
                    wait = backoff_delay(attempt, s.backoff, s.backoff_max, self._rng())
                else:
                    self.gate.defer(host_key(url), wait)
                self._sleep(wait)
        last.message += f" Gave up after {last.attempts} attempts ([crawl] retries)."
        return last

    def _once(self, url: str, headers: dict[str, str], cap: int, respect_robots: bool) -> Fetched:
        s = self.settings
        try:
            resp = self._session().get(url, headers=headers, stream=True, allow_redirects=True,
                                       timeout=(s.connect_timeout, s.read_timeout))
        except requests.exceptions.TooManyRedirects:
            return Fetched(url, reason="redirect_loop",
                           message=f"{url}: more than {s.max_redirects} redirects ([crawl] max_redirects).")
        except requests.exceptions.Timeout as exc:
            raise _Retry(Fetched(url, reason="timeout", message=f"{url}: no answer within the connect/read "
                                 f"timeouts ({s.connect_timeout:g}/{s.read_timeout:g} s, [crawl] connect_timeout "
                                 f"and read_timeout) ({type(exc).__name__}).")) from None
        except requests.exceptions.ConnectionError as exc:
            raise _Retry(Fetched(url, reason="connection", message=f"{url}: connection failed "
                                 f"({_short(exc)}); check the host name and your network.")) from None
        except (requests.exceptions.RequestException, ValueError) as exc:
            return Fetched(url, reason="bad_url", message=f"{url}: not a URL requests can fetch ({_short(exc)}).")
        with resp:
            return self._read(url, resp, cap, respect_robots)

    def _read(self, url: str, resp: requests.Response, cap: int, respect_robots: bool) -> Fetched:
        s = self.settings
        head = {k.lower(): v for k, v in resp.headers.items()}
        base = Fetched(url, status=resp.status_code, final_url=resp.url, headers=head)
        if resp.status_code in RETRY_STATUS:
            wait = parse_retry_after(head.get("retry-after"), time.time()) \
                if resp.status_code in (429, 503) else None
            raise _Retry(replace(base, reason=f"http_{resp.status_code}",
                                 message=f"{url}: HTTP {resp.status_code} {resp.reason} (server busy or failing)."),
                         wait)
        if not 200 <= resp.status_code < 300:
            hint = {403: " even with the result page as Referer (hot-link protection or a blocked agent)",
                    404: " (the image was removed)", 410: " (the image was removed)"}.get(resp.status_code, "")
            return replace(base, reason=f"http_{resp.status_code}",
                           message=f"{url}: HTTP {resp.status_code} {resp.reason}{hint}.")
        directive = robots_opt_out(head.get("x-robots-tag")) if respect_robots else None
        if directive:
            return replace(base, reason="robots", message=f"{url}: X-Robots-Tag: {directive}: the owner opts "
                           f"out of AI use; skipped and recorded, as asked.")
        declared = head.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            return replace(base, reason="too_large", message=f"{url}: {int(declared):,} bytes announced, over "
                           f"the {cap:,}-byte cap ([crawl] max_bytes); not downloaded.")
        deadline = time.monotonic() + s.total_timeout
        chunks: list[bytes] = []
        size = 0
        try:
            # read1 returns whatever has arrived (read(n) would wait for n bytes), so a trickling body meets
            # the total deadline instead of holding the thread until it ends.
            while chunk := resp.raw.read1(CHUNK, decode_content=True):
                size += len(chunk)
                if size > cap:
                    return replace(base, reason="too_large", message=f"{url}: body passed the {cap:,}-byte cap "
                                   f"([crawl] max_bytes); cut off and not stored.")
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise _Retry(replace(base, reason="timeout", message=f"{url}: body not complete within "
                                         f"{s.total_timeout:g} s ([crawl] total_timeout)."))
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
            raise _Retry(replace(base, reason="timeout", message=f"{url}: the body stalled after {size:,} bytes "
                                 f"for {s.read_timeout:g} s ([crawl] read_timeout) ({_short(exc)}).")) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # IncompleteRead, reset, bad chunking or gzip
            raise _Retry(replace(base, reason="truncated", message=f"{url}: the body stopped after {size:,} "
                                 f"bytes ({_short(exc)}).")) from None
        return replace(base, body=b"".join(chunks))


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:197] + "..."


def browser_headers(user_agent: str, referer: str | None = None, accept: str | None = None) -> dict[str, Any]:
    """Headers for a search result page, as a browser would send them."""
    out = {"User-Agent": user_agent, "Accept-Language": "en-US,en;q=0.9",
           "Accept": accept or "text/html,application/xhtml+xml,application/json;q=0.9,*/*;q=0.8"}
    if referer:
        out["Referer"] = referer
    return out
