"""Polite, bounded HTTP for result pages and image hosts.

One :class:`Http` per crawl: kept-alive connections (:mod:`.connections` for image downloads, ``requests``
sessions for result pages, whose cookies carry from page to page), a per-host gate (concurrency cap plus
spacing of request starts), a byte cap, and retries with exponential backoff and jitter that honour
``Retry-After``. Every outcome is a :class:`Fetched` with a short reason code and a message that names the URL
and what to do, never an exception, so one bad host cannot stop a crawl.

Every connection is opened by the network policy's :class:`~.guard.Guard`, under one time budget per URL
([crawl] total_timeout) that covers connecting, the status line, the headers and the body of all its attempts
and the waits between them: a trickle is cut when it runs out and recorded as ``too_slow``, never retried (a
trickle is a choice, not a transient fault); an address inside the network is refused as ``blocked_address``
unless ``[crawl] allow_private`` is on (see :mod:`.guard`).
"""

from __future__ import annotations

import http.client
import os
import random
import re
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from facecurate import __version__
from facecurate.crawl.http.connections import Connections
from facecurate.crawl.http.guard import Attempt, BlockedAddress, Guard, Watchdog
from facecurate.crawl.urls import host_key, unfetchable_reason
from facecurate.workspace import Workspace, options_from

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# Failures worth another try on a later crawl; the rest (404, robots, not an image, too slow…) are final.
# blocked_address is here so that turning [crawl] allow_private on lets the next crawl fetch what it refused.
TRANSIENT = frozenset({"timeout", "connection", "truncated", "http_429", "http_500", "http_502", "http_503",
                       "http_504", "rate_limited", "interrupted", "blocked_address", "worker_crashed",
                       "missing"})
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
    allow_private: bool

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
    if value.isascii() and value.isdigit():  # not only isdigit: "²" is a digit to it, and no number to float()
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def backoff_delay(attempt: int, base: float, cap: float, jitter: float) -> float:
    """Exponential backoff with jitter in [0.5, 1.0) of the step, so retrying clients spread out."""
    return min(cap, base * 2.0 ** attempt) * (0.5 + 0.5 * jitter)


def robots_opt_out(header: str | None) -> str | None:
    """The directive of an ``X-Robots-Tag`` that forbids AI use (``noai``/``noimageai``), if any."""
    if not header:
        return None
    tokens = set(re.findall(r"[a-z0-9_-]+", header.lower()))
    return next((d for d in ROBOTS_OPT_OUT if d in tokens), None)


def _pool_classes(guard: Guard) -> dict[str, type[HTTPConnectionPool]]:
    """urllib3 connection pools (under a requests session) whose every connection, first request and each
    redirect hop, is opened by ``guard``, and whose sockets are handed to the current attempt's watchdog:
    a TLS socket once wrapped, a kept-alive one when reused."""

    def opened(conn: HTTPConnection) -> socket.socket:
        """:meth:`Guard.open` with urllib3's exceptions, as its ``_new_conn`` (which this replaces) raises."""
        limit = conn.timeout if isinstance(conn.timeout, (int, float)) else None
        try:
            return guard.open(conn._dns_host, int(conn.port or 80), limit, conn.socket_options or ())
        except socket.gaierror as exc:
            raise NameResolutionError(conn.host, conn, exc) from exc
        except TimeoutError as exc:
            raise ConnectTimeoutError(conn, f"Connection to {conn.host} timed out. "
                                      f"(connect timeout={limit})") from exc
        except OSError as exc:
            raise NewConnectionError(conn, f"Failed to establish a new connection: {exc}") from exc

    class Conn(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return opened(self)

    class TlsConn(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return opened(self)

        def connect(self) -> None:
            super().connect()
            if self.sock is not None:
                guard.watch(self.sock)

    def watched(conn: Any) -> Any:
        if conn.sock is not None:
            guard.watch(conn.sock)
        return conn

    class Pool(HTTPConnectionPool):
        ConnectionCls = Conn

        def _get_conn(self, timeout: float | None = None) -> Any:
            return watched(super()._get_conn(timeout))

    class TlsPool(HTTPSConnectionPool):
        ConnectionCls = TlsConn

        def _get_conn(self, timeout: float | None = None) -> Any:
            return watched(super()._get_conn(timeout))

    return {"http": Pool, "https": TlsPool}


def _adapter(guard: Guard, size: int) -> HTTPAdapter:
    """A requests adapter over the guarded pools."""
    pools = _pool_classes(guard)

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

    return Adapter(pool_connections=size, pool_maxsize=size, max_retries=0)


class HostGate:
    """At most ``per_host`` requests in flight per host, and request starts spaced by ``1 / rate``.

    :meth:`limit` tightens both for one host (Wikimedia's robot policy allows 2 connections to
    upload.wikimedia.org); it can only lower the [crawl] caps, never raise them."""

    def __init__(self, per_host: int, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep) -> None:
        self._per_host = max(1, per_host)
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._next: dict[str, float] = {}
        self._caps: dict[str, tuple[int, float]] = {}

    def limit(self, host: str, per_host: int, rate: float) -> None:
        """Cap ``host`` (a :func:`host_key`) at ``per_host`` requests in flight and ``rate`` starts a second,
        or the [crawl] caps where those are lower. Set before the host's first request (the crawl does it when
        it creates the engine); a cap set later applies to requests that queue after it."""
        with self._lock:
            old = self._caps.get(host, (self._per_host, self._interval))
            cap = (max(1, min(old[0], per_host)), max(old[1], 1.0 / rate if rate > 0 else 0.0))
            self._caps[host] = cap
            self._slots[host] = threading.BoundedSemaphore(cap[0])

    def caps(self) -> dict[str, tuple[int, float]]:
        """The per-host caps set with :meth:`limit`, as (requests in flight, starts a second)."""
        with self._lock:
            return {h: (n, 1.0 / gap if gap > 0 else 0.0) for h, (n, gap) in self._caps.items()}

    @contextmanager
    def slot(self, host: str) -> Iterator[None]:
        with self._lock:
            per_host, interval = self._caps.get(host, (self._per_host, self._interval))
            sem = self._slots.setdefault(host, threading.BoundedSemaphore(per_host))
        with sem:
            with self._lock:
                now = self._clock()
                start = max(now, self._next.get(host, now))
                self._next[host] = start + interval
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
            text = (self.body or b"").decode(charset, errors="replace")
        except (LookupError, ValueError):  # unknown, not text (hex), or refusing errors="replace" (idna)
            text = (self.body or b"").decode("utf-8", errors="replace")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates, which unicode_escape makes of "\ud800" and nothing encodes
            text = text.encode("utf-8", "surrogatepass").decode("utf-8", errors="replace")
        return text


class _Retry(Exception):
    def __init__(self, fetched: Fetched, wait: float | None = None) -> None:
        self.fetched, self.wait = fetched, wait


class Http:
    """Thread-safe GETs with the politeness, time and network rules above."""

    def __init__(self, settings: HttpSettings, *, sleep: Callable[[float], None] | None = None,
                 rng: Callable[[], float] = random.random) -> None:
        self.settings = settings
        self._stop = threading.Event()
        # Waits (backoff, Retry-After, spacing) end early on abort(), so Ctrl-C never waits them out.
        self._sleep: Callable[[float], object] = sleep or self._stop.wait
        self.gate = HostGate(settings.per_host, settings.per_host_rate, sleep=sleep or self._stop.wait)
        self._rng = rng
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._guard = Guard(settings.allow_private)
        self._watchdog = Watchdog()
        self._connections = Connections(self._guard, max(settings.concurrency, settings.per_host))
        self._proxied = _proxied()

    def trust(self, base_url: str) -> None:
        """Let the network policy through for ``base_url``'s host and port (an engine the user configured)."""
        self._guard.trust(base_url)

    def policy(self) -> tuple[list[tuple[str, int]], dict[str, tuple[int, float]]]:
        """The (host, port) pairs trusted and the per-host caps so far, as plain values, so a client built from
        the same settings in another process (an executor's worker) obeys the same rules (:meth:`adopt`)."""
        return sorted(self._guard.trusted), self.gate.caps()

    def adopt(self, trusted: list[tuple[str, int]], caps: dict[str, tuple[int, float]]) -> None:
        self._guard.trusted.update(trusted)
        for host, (per_host, rate) in caps.items():
            self.gate.limit(host, per_host, rate)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = _adapter(self._guard, max(self.settings.concurrency, self.settings.per_host))
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.max_redirects = self.settings.max_redirects
            session.headers["User-Agent"] = self.settings.user_agent
            session.trust_env = _environment_matters()
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def abort(self) -> None:
        """Give up everything in flight now (Ctrl-C): sockets are shut, waits end, no new attempt starts."""
        self._stop.set()
        self._watchdog.abort_all()

    def close(self) -> None:
        self._watchdog.close()
        with self._lock:
            for s in self._sessions:
                s.close()
            self._sessions.clear()
        self._connections.close()

    def get(self, url: str, headers: dict[str, str] | None = None, max_bytes: int | None = None,
            respect_robots: bool = True, session: bool = False) -> Fetched:
        """GET ``url`` with retries; never raises for network or HTTP trouble.

        ``session``: through a requests session, whose cookies carry from request to request (an engine's
        result pages). Without it (image downloads) the GET goes over :mod:`.connections`, each redirect hop
        followed here: requests costs ~0.6 ms more CPU per GET, more than half of a crawl's per image in its
        own process. Where a proxy is set in the environment, requests is used always (it reads it; the CA
        bundle variables are read by both paths).

        One time budget per URL ([crawl] total_timeout) covers all its attempts and the waits between them
        (backoff, Retry-After); only queueing for the host's slot is outside it, as that is other URLs' time.
        So no server, however it answers, holds a thread on one URL for longer than total_timeout."""
        s = self.settings
        bad = unfetchable_reason(url)
        if bad is not None:
            return Fetched(url, reason=bad, message=_unfetchable_message(url, bad))
        cap = max_bytes or s.max_bytes
        last = Fetched(url, reason="connection", message=f"{url}: not fetched.")
        spent = 0.0
        for attempt in range(s.retries + 1):
            if self._stop.is_set():
                return _interrupted(url, attempt)
            try:
                with self.gate.slot(host_key(url)):
                    started = time.monotonic()
                    try:
                        once = self._once if session or self._proxied else self._once_plain
                        result = once(url, headers or {}, cap, respect_robots, started + s.total_timeout - spent)
                    finally:
                        spent += time.monotonic() - started
                result.attempts = attempt + 1
                return result
            except _Retry as retry:
                last = retry.fetched
                last.attempts = attempt + 1
                if attempt == s.retries:
                    break
                wait = retry.wait
                left = s.total_timeout - spent
                if wait is not None and wait > min(s.retry_after_max, left):
                    last.reason = "rate_limited"
                    limit = (f"[crawl] retry_after_max = {s.retry_after_max:.0f} s" if wait > s.retry_after_max
                             else f"the {max(0.0, left):.0f} s left of this URL's [crawl] total_timeout")
                    last.message = (f"{url}: the host asks to wait {wait:.0f} s (Retry-After), longer than "
                                    f"{limit}; left for a later crawl, which retries it.")
                    return last
                if wait is None:
                    wait = backoff_delay(attempt, s.backoff, s.backoff_max, self._rng())
                    if wait >= left:
                        last.message += " No time left for another attempt ([crawl] total_timeout)."
                        break
                else:
                    self.gate.defer(host_key(url), wait)
                self._sleep(wait)
                spent += wait
        last.message += f" Gave up after {last.attempts} attempts ([crawl] retries)."
        return last

    def _once(self, url: str, headers: dict[str, str], cap: int, respect_robots: bool, deadline: float) -> Fetched:
        s = self.settings
        attempt = Attempt(deadline)
        self._guard.local.attempt = attempt
        self._watchdog.watch(attempt)
        try:
            if attempt.over():  # out of time, or aborted before it began: nothing is opened
                return self._too_slow(url, attempt, None)
            try:
                resp = self._session().get(url, headers=headers, stream=True, allow_redirects=True,
                                           timeout=(min(s.connect_timeout, attempt.remaining()), s.read_timeout))
            except BlockedAddress as exc:
                return Fetched(url, reason="blocked_address", message=_blocked_message(url, exc))
            except requests.exceptions.TooManyRedirects:
                return Fetched(url, reason="redirect_loop",
                               message=f"{url}: more than {s.max_redirects} redirects ([crawl] max_redirects).")
            except requests.exceptions.InvalidSchema as exc:
                return Fetched(url, reason="bad_scheme", message=f"{url}: redirected to a URL that is not http(s) "
                               f"({_short(exc)}); only http and https are fetched.")
            except requests.exceptions.Timeout as exc:
                if attempt.over():
                    return self._too_slow(url, attempt, None)
                raise _Retry(Fetched(url, reason="timeout", message=f"{url}: no answer within the connect/read "
                                     f"timeouts ({s.connect_timeout:g}/{s.read_timeout:g} s, [crawl] connect_timeout "
                                     f"and read_timeout) ({type(exc).__name__}).")) from None
            except requests.exceptions.ConnectionError as exc:
                if attempt.over():
                    return self._too_slow(url, attempt, None)
                raise _Retry(Fetched(url, reason="connection", message=f"{url}: connection failed "
                                     f"({_short(exc)}); check the host name and your network.")) from None
            except (requests.exceptions.RequestException, ValueError) as exc:
                if attempt.over():
                    return self._too_slow(url, attempt, None)
                return Fetched(url, reason="bad_url",
                               message=f"{url}: not a URL requests can fetch ({_short(exc)}).")
            with resp:
                try:
                    result = self._read(url, resp.status_code, resp.reason, resp.headers, _decoded(resp.raw), cap,
                                        respect_robots, attempt, resp.url)
                finally:
                    attempt.end()  # before the connection goes back to the pool
            return result
        finally:
            attempt.end()
            self._watchdog.unwatch(attempt)
            self._guard.local.attempt = None

    def _once_plain(self, url: str, headers: dict[str, str], cap: int, respect_robots: bool,
                    deadline: float) -> Fetched:
        """One attempt over :mod:`.connections`: the same guard, deadline and outcomes as :meth:`_once`,
        redirects followed hop by hop (each hop's connection opened by the guard, each hop inside the deadline)."""
        s = self.settings
        attempt = Attempt(deadline)
        self._guard.local.attempt = attempt
        self._watchdog.watch(attempt)
        sent = {"User-Agent": s.user_agent, "Accept-Encoding": "gzip, deflate", **headers}
        current = url
        try:
            for hop in range(s.max_redirects + 2):
                if attempt.over():  # out of time, or aborted before it began: nothing is opened
                    return self._too_slow(url, attempt, None)
                if hop > s.max_redirects:
                    return Fetched(url, reason="redirect_loop",
                                   message=f"{url}: more than {s.max_redirects} redirects ([crawl] max_redirects).")
                try:
                    answer = self._connections.get(current, sent, min(s.connect_timeout, attempt.remaining()),
                                                   s.read_timeout)
                except BlockedAddress as exc:
                    return Fetched(url, reason="blocked_address", message=_blocked_message(url, exc))
                except TimeoutError as exc:
                    if attempt.over():
                        return self._too_slow(url, attempt, None)
                    raise _Retry(Fetched(url, reason="timeout", message=f"{url}: no answer within the connect/read "
                                         f"timeouts ({s.connect_timeout:g}/{s.read_timeout:g} s, [crawl] "
                                         f"connect_timeout and read_timeout) ({type(exc).__name__}).")) from None
                except ssl.SSLCertVerificationError as exc:  # a ValueError too: first
                    raise _Retry(Fetched(url, reason="connection", message=f"{url}: the host's TLS certificate "
                                         f"does not verify ({_short(exc)}); for a host of your own with its own "
                                         f"CA, point REQUESTS_CA_BUNDLE at that CA's certificate.")) from None
                except (http.client.InvalidURL, ValueError) as exc:  # UnicodeError too
                    if attempt.over():
                        return self._too_slow(url, attempt, None)
                    return Fetched(url, reason="bad_url", message=f"{url}: not a URL that can be fetched "
                                   f"({_short(exc)}).")
                except (http.client.HTTPException, OSError) as exc:  # refused, reset, not HTTP, TLS failed
                    if attempt.over():
                        return self._too_slow(url, attempt, None)
                    raise _Retry(Fetched(url, reason="connection", message=f"{url}: connection failed "
                                         f"({_short(exc)}); check the host name and your network.")) from None
                location = answer.headers.get("location")
                if answer.status in _REDIRECTS and location:
                    answer.release(reusable=False)  # its body is not read: the connection is not reused
                    try:
                        target = urljoin(current, location)
                    except ValueError as exc:  # http://[::1 and the like
                        return Fetched(url, reason="bad_url", message=f"{url}: redirected to {location[:200]!r}, "
                                       f"not a URL ({_short(exc)}).")
                    if urlsplit(target).scheme.lower() not in ("http", "https"):
                        return Fetched(url, reason="bad_scheme", message=f"{url}: redirected to a URL that is "
                                       f"not http(s) ({target[:200]}); only http and https are fetched.")
                    current = target
                    continue
                try:
                    result = self._read(url, answer.status, answer.reason, answer.headers, answer.read1, cap,
                                        respect_robots, attempt, current)
                finally:
                    attempt.end()  # before the connection goes back to the pool
                    answer.release(reusable=not attempt.over())
                return result
            raise AssertionError("unreachable")
        finally:
            attempt.end()
            self._watchdog.unwatch(attempt)
            self._guard.local.attempt = None

    def _too_slow(self, url: str, attempt: Attempt, base: Fetched | None) -> Fetched:
        if attempt.aborted:
            return _interrupted(url, 0)
        s = self.settings
        return replace(base or Fetched(url), body=None, reason="too_slow", message=(
            f"{url}: status line, headers and body not complete within {s.total_timeout:g} s ([crawl] "
            f"total_timeout, all attempts together); the host sends too slowly, so it is not retried. Raise "
            f"total_timeout if it is a slow host you trust."))

    def _read(self, url: str, status: int, reason: str, headers: Mapping[str, str], read1: Callable[[int], bytes],
              cap: int, respect_robots: bool, attempt: Attempt, final_url: str | None) -> Fetched:
        """An answer's outcome, whichever client got it: ``read1(n)`` gives the decoded body as it arrives."""
        s = self.settings
        head = {k.lower(): v for k, v in headers.items()}
        base = Fetched(url, status=status, final_url=final_url, headers=head)
        if attempt.over():
            return self._too_slow(url, attempt, base)
        if status in RETRY_STATUS:
            wait = parse_retry_after(head.get("retry-after"), time.time()) if status in (429, 503) else None
            raise _Retry(replace(base, reason=f"http_{status}",
                                 message=f"{url}: HTTP {status} {reason} (server busy or failing)."),
                         wait)
        if not 200 <= status < 300:
            hint = {403: " even with the result page as Referer (hot-link protection or a blocked agent)",
                    404: " (the image was removed)", 410: " (the image was removed)"}.get(status, "")
            return replace(base, reason=f"http_{status}", message=f"{url}: HTTP {status} {reason}{hint}.")
        directive = robots_opt_out(head.get("x-robots-tag")) if respect_robots else None
        if directive:
            return replace(base, reason="robots", message=f"{url}: X-Robots-Tag: {directive}: the owner opts "
                           f"out of AI use; skipped and recorded, as asked.")
        declared = head.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > cap:  # "²" is a digit to isdigit()
            return replace(base, reason="too_large", message=f"{url}: {int(declared):,} bytes announced, over "
                           f"the {cap:,}-byte cap ([crawl] max_bytes); not downloaded.")
        chunks: list[bytes] = []
        size = 0
        try:
            # read1 returns whatever has arrived (read(n) would wait for n bytes); the watchdog ends a trickle.
            while chunk := read1(CHUNK):
                size += len(chunk)
                if size > cap:
                    return replace(base, reason="too_large", message=f"{url}: body passed the {cap:,}-byte cap "
                                   f"([crawl] max_bytes); cut off and not stored.")
                chunks.append(chunk)
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
            if attempt.over():
                return self._too_slow(url, attempt, base)
            raise _Retry(replace(base, reason="timeout", message=f"{url}: the body stalled after {size:,} bytes "
                                 f"for {s.read_timeout:g} s ([crawl] read_timeout) ({_short(exc)}).")) from None
        # IncompleteRead, reset, bad chunking or gzip
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, zlib.error, OSError) as exc:
            if attempt.over():
                return self._too_slow(url, attempt, base)
            raise _Retry(replace(base, reason="truncated", message=f"{url}: the body stopped after {size:,} "
                                 f"bytes ({_short(exc)}).")) from None
        if attempt.over():  # a cut socket can also look like a clean end of a close-delimited body
            return self._too_slow(url, attempt, base)
        return replace(base, body=b"".join(chunks))


# What requests reads from the environment on every request when a session trusts it: proxies (documented
# in the README) and a CA bundle. Read per request it costs ~0.1 ms of a crawl's ~2.5 ms of CPU per image, so a
# session trusts the environment only when one of these is set. ~/.netrc is not among them: its credentials
# are never sent to the image hosts that search results name.
_ENVIRONMENT = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "requests_ca_bundle", "curl_ca_bundle")


def _environment_matters() -> bool:
    return any(key.lower() in _ENVIRONMENT for key in os.environ)


def _proxied() -> bool:
    """A proxy is set in the environment: downloads then go through requests, which reads it (the plain
    urllib3 path reads only the CA bundle variables)."""
    return any(key.lower() in ("http_proxy", "https_proxy", "all_proxy") for key in os.environ)


_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def _decoded(raw: urllib3.BaseHTTPResponse) -> Callable[[int], bytes]:
    """A urllib3 body's ``read1``, decoded (gzip, deflate) as the other client's is."""
    return lambda n: raw.read1(n, decode_content=True)


def _blocked_message(url: str, exc: BlockedAddress) -> str:
    return (f"{url}: refused, {exc.host} resolves to {exc.address} ({exc.why}), an address on this machine or "
            f"inside a private network, not a public photo host (a search result or redirect pointing there may "
            f"be an attack). To crawl an intranet mirror, set [crawl] allow_private = true.")


def _interrupted(url: str, attempts: int) -> Fetched:
    return Fetched(url, reason="interrupted", attempts=attempts,
                   message=f"{url}: the crawl was interrupted before this URL finished; the next crawl fetches it.")


def _unfetchable_message(url: str, reason: str) -> str:
    if reason == "bad_scheme":
        return (f"{url}: not an http(s) URL; facecurate downloads only http and https, so this result is "
                f"recorded and skipped (nothing to fix on your side: the engine returned it).")
    return f"{url}: not a URL with a host and a valid port; recorded and skipped (the engine returned it)."


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
