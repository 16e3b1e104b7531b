"""Polite, bounded HTTP for result pages and image hosts.

One :class:`Http` per crawl: pooled ``requests`` sessions (one per thread, so connections are reused without
sharing a session across threads), a per-host gate (concurrency cap plus spacing of request starts), a byte cap,
and retries with exponential backoff and jitter that honour ``Retry-After``. Every outcome is a :class:`Fetched`
with a short reason code and a message that names the URL and what to do, never an exception, so one bad host
cannot stop a crawl.

Two things a server must not be able to do, whatever it sends:

- *hold a thread*: a socket read timeout restarts with every byte, so a server trickling its status line,
  headers or body would never trip it. Each URL gets one time budget (``total_timeout``) that covers connecting,
  the status line, the headers and the body of all its attempts and the waits between them; a watchdog thread
  shuts the socket down when it runs out (recorded as ``too_slow``, never retried: a trickle is a choice, not
  a transient fault).
- *reach inside the network*: every connection is opened by :class:`_Guard` to an address it resolved and
  checked itself (no second lookup an attacker's DNS could answer differently), on the first request and on
  every redirect hop; loopback, private, link-local, multicast, reserved and unspecified addresses are refused
  as ``blocked_address`` unless ``[crawl] allow_private`` is on. Hosts of engines the user configured are
  trusted (their ``base_url`` is the user's own choice, a test server or an intranet mirror).
"""

from __future__ import annotations

import ipaddress
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
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
# Addresses a v6 address may carry a v4 one in: checked as that v4 address too (NAT64 well-known prefix).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


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


def blocked_range(address: str) -> str | None:
    """Why ``address`` is inside someone's network rather than on the public internet (None: public).

    ``is_global`` alone lets multicast through, and a v6 address can carry a private v4 one (mapped,
    6to4, Teredo, NAT64), so each of those is checked as the v4 address it stands for."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is None and ip in _NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None:
            why = blocked_range(str(inner))
            return f"{why} (inside {ip})" if why else None
    for name in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{name}"):
            return name.replace("_", "-")
    return None if ip.is_global else "not globally routable"


class BlockedAddress(Exception):
    """A connection the network policy refused; not an OSError, so urllib3 and requests pass it through
    untouched instead of retrying it or wrapping it as a connection failure."""

    def __init__(self, host: str, address: str, why: str) -> None:
        super().__init__(f"{host} resolves to {address} ({why})")
        self.host, self.address, self.why = host, address, why


class _Attempt:
    """One HTTP attempt's deadline and the sockets it uses, so the watchdog can cut them off."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False
        self.aborted = False
        self._open = True
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def over(self) -> bool:
        """Cut off by the watchdog (deadline or abort): whatever the read returned is not the whole answer."""
        return self.expired

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            if self._open and not self.expired:
                self._socks.append(sock)
                return
        _cut(sock)

    def expire(self, aborted: bool = False) -> None:
        """Shut the sockets down (not close: another thread may be blocked in them, and the descriptor must not
        be reused under it); a blocked read returns at once and the attempt sees ``expired``."""
        with self._lock:
            if not self._open or self.expired:
                return
            self.expired, self.aborted = True, aborted
            socks, self._socks = self._socks, []
        for s in socks:
            _cut(s)

    def end(self) -> None:
        """The attempt is over: from now on its sockets belong to the pool, and the watchdog leaves them alone."""
        with self._lock:
            self._open = False
            self._socks.clear()


def _cut(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One thread per :class:`Http` that expires attempts at their deadline (or all of them on abort)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._attempts: set[_Attempt] = set()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._wake: float | None = None  # the deadline the thread sleeps until (None: until notified)

    def watch(self, attempt: _Attempt) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="facecurate-http-watchdog", daemon=True)
                self._thread.start()
            self._attempts.add(attempt)
            # Woken only when this deadline comes before the one it sleeps until: attempts start with the same
            # budget, so most end after one already watched and need no wake-up (a thread switch per request).
            if self._wake is None or attempt.deadline < self._wake:
                self._cond.notify()

    def unwatch(self, attempt: _Attempt) -> None:
        with self._cond:
            self._attempts.discard(attempt)

    def abort_all(self) -> None:
        with self._cond:
            attempts, self._attempts = list(self._attempts), set()
        for a in attempts:
            a.expire(aborted=True)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                due = [a for a in self._attempts if a.deadline <= now]
                for a in due:
                    self._attempts.discard(a)
                    a.expire()
                self._wake = min((a.deadline for a in self._attempts), default=None)
                self._cond.wait(None if self._wake is None else max(0.0, self._wake - now))


class _Guard:
    """The network policy and the current attempt of each thread, shared by the connections of one Http."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.trusted: set[tuple[str, int]] = set()
        self.local = threading.local()

    def attempt(self) -> _Attempt | None:
        return getattr(self.local, "attempt", None)

    def trust(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.hostname:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
            self.trusted.add((parts.hostname.lower().rstrip("."), port))

    def connect(self, conn: HTTPConnection) -> socket.socket:
        """Resolve once, check every address, connect only to a checked one, and hand the socket to the
        attempt's watchdog. Mirrors urllib3's ``_new_conn`` (same exceptions), which it replaces."""
        host = conn._dns_host.strip("[]").lower()
        port = int(conn.port or 80)
        attempt = self.attempt()
        limit = conn.timeout if isinstance(conn.timeout, (int, float)) else None
        if attempt is not None:
            limit = max(0.001, min(limit if limit is not None else attempt.remaining(), attempt.remaining()))
        try:
            infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise NameResolutionError(conn.host, conn, exc) from exc
        if not (self.allow_private or (host, port) in self.trusted):
            refused = [(str(i[4][0]), why) for i in infos if (why := blocked_range(str(i[4][0])))]
            if refused:  # one inside address is enough to refuse: a name that points inside is not a photo host
                raise BlockedAddress(host, *refused[0])
        error: OSError | None = None
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                for opt in conn.socket_options or ():
                    sock.setsockopt(*opt)
                sock.settimeout(limit)
                if attempt is not None:
                    attempt.add(sock)
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
                if isinstance(exc, TimeoutError):
                    raise ConnectTimeoutError(conn, f"Connection to {conn.host} timed out. "
                                              f"(connect timeout={limit})") from exc
        raise NewConnectionError(conn, f"Failed to establish a new connection: {error}")


def _pool_classes(guard: _Guard) -> dict[str, type[HTTPConnectionPool]]:
    """Connection pools whose every connection (first request and each redirect hop) is opened by ``guard``,
    and whose kept-alive connections are handed to the current attempt's watchdog when reused (a reused socket
    must be as cuttable at the deadline as a new one)."""

    class Conn(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return guard.connect(self)

    class TlsConn(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return guard.connect(self)

    def watched(conn: Any) -> Any:
        attempt = guard.attempt()
        if attempt is not None and conn.sock is not None:
            attempt.add(conn.sock)
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


def _adapter(guard: _Guard, size: int) -> HTTPAdapter:
    """A requests adapter over the guarded pools."""
    pools = _pool_classes(guard)

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

    return Adapter(pool_connections=size, pool_maxsize=size, max_retries=0)


def _plain_pools(guard: _Guard, size: int) -> urllib3.PoolManager:
    """One urllib3 pool manager over the guarded pools, shared by every download thread (urllib3's pools are
    thread-safe). Certificates are checked against the bundle requests would use: REQUESTS_CA_BUNDLE, else
    CURL_CA_BUNDLE, else certifi's (a folder of certificates works too, as in requests)."""
    import certifi

    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
    folder = os.path.isdir(bundle)
    manager = urllib3.PoolManager(num_pools=max(32, size), maxsize=size, block=False, retries=False,
                                  cert_reqs="CERT_REQUIRED", ca_certs=None if folder else bundle,
                                  ca_cert_dir=bundle if folder else None)
    manager.pool_classes_by_scheme = _pool_classes(guard)
    return manager


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
            return (self.body or b"").decode(charset, errors="replace")
        except LookupError:
            return (self.body or b"").decode("utf-8", errors="replace")


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
        self._guard = _Guard(settings.allow_private)
        self._watchdog = _Watchdog()
        self._plain: urllib3.PoolManager | None = None
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

    def _plain_manager(self) -> urllib3.PoolManager:
        with self._lock:
            if self._plain is None:
                self._plain = _plain_pools(self._guard, max(self.settings.concurrency, self.settings.per_host))
            return self._plain

    def close(self) -> None:
        self._watchdog.close()
        with self._lock:
            for s in self._sessions:
                s.close()
            self._sessions.clear()
            if self._plain is not None:
                self._plain.clear()

    def get(self, url: str, headers: dict[str, str] | None = None, max_bytes: int | None = None,
            respect_robots: bool = True, session: bool = False) -> Fetched:
        """GET ``url`` with retries; never raises for network or HTTP trouble.

        ``session``: through a requests session, whose cookies carry from request to request (an engine's
        result pages). Without it (image downloads) the GET goes through urllib3 directly, each redirect hop
        followed here: requests costs ~0.35 ms more CPU per GET, a fifth of a crawl's per image in its own
        process. Where a proxy is set in the environment, requests is used always (it reads it; the CA
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
        attempt = _Attempt(deadline)
        self._guard.local.attempt = attempt
        self._watchdog.watch(attempt)
        try:
            if attempt.remaining() <= 0:
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
                    result = self._read(url, resp, cap, respect_robots, attempt)
                finally:
                    attempt.end()  # before the connection goes back to the pool
            return result
        finally:
            attempt.end()
            self._watchdog.unwatch(attempt)
            self._guard.local.attempt = None

    def _once_plain(self, url: str, headers: dict[str, str], cap: int, respect_robots: bool,
                    deadline: float) -> Fetched:
        """One attempt through urllib3: the same guard, deadline and outcomes as :meth:`_once`, redirects
        followed hop by hop (each hop's connection opened by the guard, each hop inside the deadline)."""
        s = self.settings
        attempt = _Attempt(deadline)
        self._guard.local.attempt = attempt
        self._watchdog.watch(attempt)
        sent = {"User-Agent": s.user_agent, "Accept-Encoding": "gzip, deflate", **headers}
        manager = self._plain_manager()
        current = url
        try:
            for hop in range(s.max_redirects + 2):
                if attempt.remaining() <= 0:
                    return self._too_slow(url, attempt, None)
                if hop > s.max_redirects:
                    return Fetched(url, reason="redirect_loop",
                                   message=f"{url}: more than {s.max_redirects} redirects ([crawl] max_redirects).")
                try:
                    resp = manager.urlopen("GET", current, headers=sent, redirect=False, retries=False,
                                           preload_content=False, timeout=urllib3.Timeout(
                                               connect=min(s.connect_timeout, attempt.remaining()),
                                               read=s.read_timeout))
                except BlockedAddress as exc:
                    return Fetched(url, reason="blocked_address", message=_blocked_message(url, exc))
                except (urllib3.exceptions.TimeoutError, TimeoutError) as exc:
                    if attempt.over():
                        return self._too_slow(url, attempt, None)
                    raise _Retry(Fetched(url, reason="timeout", message=f"{url}: no answer within the connect/read "
                                         f"timeouts ({s.connect_timeout:g}/{s.read_timeout:g} s, [crawl] "
                                         f"connect_timeout and read_timeout) ({type(exc).__name__}).")) from None
                except (urllib3.exceptions.LocationValueError, urllib3.exceptions.URLSchemeUnknown,
                        urllib3.exceptions.LocationParseError, ValueError) as exc:
                    if attempt.over():
                        return self._too_slow(url, attempt, None)
                    return Fetched(url, reason="bad_url", message=f"{url}: not a URL that can be fetched "
                                   f"({_short(exc)}).")
                except (urllib3.exceptions.HTTPError, OSError) as exc:
                    if attempt.over():
                        return self._too_slow(url, attempt, None)
                    raise _Retry(Fetched(url, reason="connection", message=f"{url}: connection failed "
                                         f"({_short(exc)}); check the host name and your network.")) from None
                location = resp.headers.get("location")
                if resp.status in _REDIRECTS and location:
                    resp.close()  # its body is not read: the connection is not reused
                    resp.release_conn()
                    target = urljoin(current, location)
                    if urlsplit(target).scheme.lower() not in ("http", "https"):
                        return Fetched(url, reason="bad_scheme", message=f"{url}: redirected to a URL that is "
                                       f"not http(s) ({target[:200]}); only http and https are fetched.")
                    current = target
                    continue
                try:
                    result = self._read(url, resp, cap, respect_robots, attempt, current)
                finally:
                    attempt.end()  # before the connection goes back to the pool
                    if not resp.closed:  # not read to its end (refused, cut off): not reused
                        resp.close()
                    resp.release_conn()
                return result
            raise AssertionError("unreachable")
        finally:
            attempt.end()
            self._watchdog.unwatch(attempt)
            self._guard.local.attempt = None

    def _too_slow(self, url: str, attempt: _Attempt, base: Fetched | None) -> Fetched:
        if attempt.aborted:
            return _interrupted(url, 0)
        s = self.settings
        return replace(base or Fetched(url), body=None, reason="too_slow", message=(
            f"{url}: status line, headers and body not complete within {s.total_timeout:g} s ([crawl] "
            f"total_timeout, all attempts together); the host sends too slowly, so it is not retried. Raise "
            f"total_timeout if it is a slow host you trust."))

    def _read(self, url: str, resp: requests.Response | urllib3.BaseHTTPResponse, cap: int, respect_robots: bool,
              attempt: _Attempt, final_url: str | None = None) -> Fetched:
        s = self.settings
        head = {k.lower(): v for k, v in resp.headers.items()}
        if isinstance(resp, requests.Response):
            status, raw, final_url = resp.status_code, resp.raw, resp.url
        else:
            status, raw = resp.status, resp
        base = Fetched(url, status=status, final_url=final_url, headers=head)
        if attempt.over():
            return self._too_slow(url, attempt, base)
        if status in RETRY_STATUS:
            wait = parse_retry_after(head.get("retry-after"), time.time()) if status in (429, 503) else None
            raise _Retry(replace(base, reason=f"http_{status}",
                                 message=f"{url}: HTTP {status} {resp.reason} (server busy or failing)."),
                         wait)
        if not 200 <= status < 300:
            hint = {403: " even with the result page as Referer (hot-link protection or a blocked agent)",
                    404: " (the image was removed)", 410: " (the image was removed)"}.get(status, "")
            return replace(base, reason=f"http_{status}", message=f"{url}: HTTP {status} {resp.reason}{hint}.")
        directive = robots_opt_out(head.get("x-robots-tag")) if respect_robots else None
        if directive:
            return replace(base, reason="robots", message=f"{url}: X-Robots-Tag: {directive}: the owner opts "
                           f"out of AI use; skipped and recorded, as asked.")
        declared = head.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            return replace(base, reason="too_large", message=f"{url}: {int(declared):,} bytes announced, over "
                           f"the {cap:,}-byte cap ([crawl] max_bytes); not downloaded.")
        chunks: list[bytes] = []
        size = 0
        try:
            # read1 returns whatever has arrived (read(n) would wait for n bytes); the watchdog ends a trickle.
            while chunk := raw.read1(CHUNK, decode_content=True):
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
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # IncompleteRead, reset, bad chunking or gzip
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
