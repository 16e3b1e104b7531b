"""Where a download may connect, and for how long: the network policy and each attempt's deadline.

Two things a server must not be able to do, whatever it sends:

- *hold a thread*: a socket read timeout restarts with every byte, so a server trickling its status line,
  headers or body would never trip it. Each URL gets one time budget that covers connecting, the TLS
  handshake, the status line, the headers and the body of all its attempts; a :class:`Watchdog` thread shuts
  the socket down when it runs out.
- *reach inside the network*: every connection is opened by :meth:`Guard.open` to an address it resolved and
  checked itself (no second lookup an attacker's DNS could answer differently), on the first request and on
  every redirect hop; loopback, private, link-local, multicast, reserved and unspecified addresses are refused
  with :class:`BlockedAddress` unless the policy allows private addresses. Hosts of engines the user
  configured are trusted (their ``base_url`` is the user's own choice: a test server or an intranet mirror).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from urllib.parse import urlsplit

# Addresses a v6 address may carry a v4 one in: checked as that v4 address too (NAT64 well-known prefix).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


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


class Attempt:
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
        """Cut off by the watchdog (deadline or abort), or past the deadline the watchdog is about to act on: a
        socket timeout set to the time left (connect, TLS handshake) ends at the deadline too, and which of
        the two comes first must not decide the outcome. Whatever the read returned is not the whole answer."""
        return self.expired or time.monotonic() >= self.deadline

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            if self._open and not self.expired:
                self._socks.append(sock)
                return
        cut(sock)

    def expire(self, aborted: bool = False) -> None:
        """Shut the sockets down (not close: another thread may be blocked in them, and the descriptor must not
        be reused under it); a blocked read returns at once and the attempt sees ``expired``."""
        with self._lock:
            if not self._open or self.expired:
                return
            self.expired, self.aborted = True, aborted
            socks, self._socks = self._socks, []
        for s in socks:
            cut(s)

    def end(self) -> None:
        """The attempt is over: from now on its sockets belong to the pool, and the watchdog leaves them alone."""
        with self._lock:
            self._open = False
            self._socks.clear()


def cut(sock: socket.socket) -> None:
    """Shut a socket down under whoever reads it. The plain socket's method even for a TLS socket, whose own
    ``shutdown`` also drops its TLS state under a thread that may be inside a read on it."""
    with suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Watchdog:
    """One thread per :class:`Http` that expires attempts at their deadline (or all of them on abort)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._attempts: set[Attempt] = set()
        self._closed = False
        self._aborted = False
        self._thread: threading.Thread | None = None
        self._wake: float | None = None  # the deadline the thread sleeps until (None: until notified)

    def watch(self, attempt: Attempt) -> None:
        with self._cond:
            if self._aborted:
                # A thread that queued for its host's slot, or had just passed the stop check, when the abort
                # came would otherwise start an attempt nobody cuts, and hold the exit for a whole deadline.
                attempt.expire(aborted=True)
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="facecurate-http-watchdog", daemon=True)
                self._thread.start()
            self._attempts.add(attempt)
            # Woken only when this deadline comes before the one it sleeps until: attempts start with the same
            # budget, so most end after one already watched and need no wake-up (a thread switch per request).
            if self._wake is None or attempt.deadline < self._wake:
                self._cond.notify()

    def unwatch(self, attempt: Attempt) -> None:
        with self._cond:
            self._attempts.discard(attempt)

    def abort_all(self) -> None:
        """Expire every attempt in flight, and every one watched from now on."""
        with self._cond:
            self._aborted = True
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


class Guard:
    """The network policy and the current attempt of each thread, shared by the connections of one client."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.trusted: set[tuple[str, int]] = set()
        self.local = threading.local()

    def attempt(self) -> Attempt | None:
        return getattr(self.local, "attempt", None)

    def trust(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.hostname:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
            self.trusted.add((parts.hostname.lower().rstrip("."), port))

    def watch(self, sock: socket.socket) -> None:
        """Put ``sock`` under the current attempt's deadline (a kept-alive socket taken for a new request, a
        TLS socket wrapped around a checked one)."""
        attempt = self.attempt()
        if attempt is not None:
            attempt.add(sock)

    def open(self, host: str, port: int, timeout: float | None,
             options: Sequence[tuple[int, int, int | bytes]] = ()) -> socket.socket:
        """Resolve once, check every address, connect only to a checked one, under the attempt's deadline.

        Raises :class:`BlockedAddress` for an address inside the network, ``socket.gaierror`` when the name
        does not resolve, ``TimeoutError`` when connecting takes longer than ``timeout`` (or what is left of
        the attempt), and the last ``OSError`` when no address accepts."""
        host = host.strip("[]").lower()
        attempt = self.attempt()
        limit = timeout
        if attempt is not None:
            limit = max(0.001, min(limit if limit is not None else attempt.remaining(), attempt.remaining()))
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        if not (self.allow_private or (host.rstrip("."), port) in self.trusted):
            refused = [(str(i[4][0]), why) for i in infos if (why := blocked_range(str(i[4][0])))]
            if refused:  # one inside address is enough to refuse: a name that points inside is not a photo host
                raise BlockedAddress(host, *refused[0])
        error: OSError = OSError(f"{host} resolves to no address")
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                for opt in options:
                    sock.setsockopt(*opt)
                sock.settimeout(limit)
                if attempt is not None:
                    attempt.add(sock)
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                if isinstance(exc, TimeoutError):
                    raise
                error = exc
        raise error
