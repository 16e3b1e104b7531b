"""Kept-alive HTTP/1.1 connections for image downloads, over the standard library's ``http.client``.

Why not urllib3, which requests is built on and which wraps the same ``http.client``: its pool, timeout,
retry and response objects cost ~0.25 ms of CPU per GET, about a quarter of all a crawl spent per image in its
own process, where every request of every download thread shares one GIL. What urllib3 did that matters is done
here: every connection is opened by the :class:`~facecurate.crawl.http.guard.Guard` (network policy, deadline),
a kept-alive one is reused only when the previous answer was read to its end and the server has not closed
it since, TLS is verified against the CA bundle requests would use, and gzip/deflate bodies are decoded a
bounded piece at a time (the byte cap counts decoded bytes, so a compressed bomb stops at the cap).
"""

from __future__ import annotations

import http.client
import os
import select
import socket
import ssl
import threading
import zlib
from collections.abc import Callable
from urllib.parse import quote, urlsplit

from facecurate.crawl.http.guard import Guard

# What may stand unescaped in a request target (RFC 3986 pchar, "/" and "?", plus "%" for escapes already
# made); anything else (spaces, non-ASCII, quotes) is percent-encoded, as requests and urllib3 do.
_SAFE_TARGET = "/?:@!$&'()*+,;=-._~%"
_PORTS = {"http": 80, "https": 443}
# How a kept-alive connection fails when the server closed it (or wrote past its last answer) as we sent:
# tried again once on a new connection (RemoteDisconnected is a BadStatusLine too).
_FAILED_REUSE = (http.client.BadStatusLine, ConnectionResetError, BrokenPipeError)


def ca_bundle() -> tuple[str | None, str | None]:
    """(CA file, CA folder) to verify TLS with: REQUESTS_CA_BUNDLE, else CURL_CA_BUNDLE, else certifi's, as
    requests reads them (a folder of certificates works too)."""
    import certifi

    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
    return (None, bundle) if os.path.isdir(bundle) else (bundle, None)


def request_target(path: str, query: str) -> str:
    return quote(path or "/", safe=_SAFE_TARGET) + (f"?{quote(query, safe=_SAFE_TARGET)}" if query else "")


class _Connection(http.client.HTTPConnection):
    """A connection whose socket the guard opens (policy and deadline) and, for https, wraps in TLS with the
    handshake under the deadline too."""

    def __init__(self, host: str, port: int, guard: Guard, connect_timeout: float, read_timeout: float,
                 tls: ssl.SSLContext | None) -> None:
        super().__init__(host, port, timeout=read_timeout)
        self._guard, self.connect_timeout, self._tls = guard, connect_timeout, tls

    def connect(self) -> None:
        sock = self._guard.open(self.host, self.port, self.connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is not None:
            # handshake after the watchdog has the TLS socket: a server trickling it is cut like any other
            sock = self._tls.wrap_socket(sock, server_hostname=self.host.rstrip("."), do_handshake_on_connect=False)
            self._guard.watch(sock)
            sock.do_handshake()
        sock.settimeout(self.timeout)
        self.sock = sock


class Exchange:
    """One GET's answer on a connection taken from :class:`Connections`: status, headers (lower-case names,
    repeated ones joined with ", " as one header), and the body through :meth:`read1`. :meth:`release` gives
    the connection back for reuse if the body was read to its end, and closes it otherwise."""

    def __init__(self, owner: Connections, key: tuple[str, str, int], conn: _Connection,
                 response: http.client.HTTPResponse) -> None:
        self._owner, self._key, self._conn, self._response = owner, key, conn, response
        self.status, self.reason = response.status, response.reason
        head: dict[str, str] = {}
        for name, value in response.getheaders():
            name = name.lower()
            head[name] = f"{head[name]}, {value}" if name in head else value
        self.headers = head
        self._decoder = _decoder(head.get("content-encoding", ""))
        self._ended = False

    def read1(self, n: int) -> bytes:
        """At most about ``n`` bytes of the decoded body as they arrive; b"" at its end. A body that ends
        before its Content-Length raises ``http.client.IncompleteRead``."""
        if self._decoder is None:
            return self._raw(n)
        return self._decoder.read(self._raw, n)

    def _raw(self, n: int) -> bytes:
        response = self._response
        data = response.read1(n)
        if not data:
            if response.length:  # the server closed (or the watchdog cut) before the length it announced
                raise http.client.IncompleteRead(b"", response.length)
            self._ended = True
        return data

    def release(self, reusable: bool = True) -> None:
        """Back to the pool when the answer was read to its end and the server keeps the connection open;
        closed otherwise (an unread body would be read as the next answer's status line)."""
        response = self._response
        keep = reusable and self._ended and not response.will_close
        response.close()
        if keep:
            self._owner.put(self._key, self._conn)
        else:
            self._conn.close()


class _Decoder:
    """gzip or deflate, decoded at most ``n`` bytes a call, so that a small body that expands to gigabytes
    costs no more memory than the byte cap lets through."""

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._z: zlib._Decompress | None = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzip else None

    def read(self, raw: Callable[[int], bytes], n: int) -> bytes:
        while True:
            z = self._z
            if z is not None and z.unconsumed_tail:
                data = z.unconsumed_tail
            else:
                data = raw(n)
                if not data:
                    return z.flush() if z is not None else b""
            if z is None:  # deflate: zlib-wrapped as the RFC says, or raw as some servers send it
                while len(data) < 2 and (more := raw(n)):  # the two header bytes tell which
                    data += more
                z = self._z = zlib.decompressobj(zlib.MAX_WBITS if _zlib_header(data) else -zlib.MAX_WBITS)
            out = z.decompress(data, n)
            if z.eof and z.unused_data and self._gzip:  # concatenated gzip members (RFC 1952 allows them)
                rest = z.unused_data
                z = self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out += z.decompress(rest, n)
            if out:
                return out


def _zlib_header(data: bytes) -> bool:
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


def _decoder(encoding: str) -> _Decoder | None:
    """A decoder for a Content-Encoding of gzip or deflate; None for none, identity, or one not decoded here
    (the body is then kept as sent, as urllib3 does with an encoding it does not know)."""
    value = encoding.strip().lower()
    if value in ("gzip", "x-gzip"):
        return _Decoder(gzip=True)
    if value == "deflate":
        return _Decoder(gzip=False)
    return None


class Connections:
    """Idle kept-alive connections per (scheme, host, port), shared by the download threads: a thread takes
    one for a request and gives it back after reading its answer (:meth:`Exchange.release`)."""

    def __init__(self, guard: Guard, per_host: int) -> None:
        self._guard, self._per_host = guard, per_host
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def _context(self) -> ssl.SSLContext:
        with self._lock:
            if self._tls is None:
                cafile, capath = ca_bundle()
                self._tls = ssl.create_default_context(cafile=cafile, capath=capath)
            return self._tls

    def get(self, url: str, headers: dict[str, str], connect_timeout: float, read_timeout: float) -> Exchange:
        """Send a GET for ``url`` and read its status line and headers.

        Raises what connecting raises (see :meth:`Guard.open`; ``ssl.SSLError`` for TLS), ``TimeoutError``,
        ``http.client.HTTPException`` for an answer that is not HTTP, ``ValueError`` for a URL that cannot be
        sent. A kept-alive connection the server closed meanwhile is replaced by a new one, once."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) URL with a host: {url[:200]!r}")
        host = parts.hostname if parts.hostname.isascii() else parts.hostname.encode("idna").decode("ascii")
        key = (scheme, host, parts.port or _PORTS[scheme])
        target = request_target(parts.path, parts.query)
        conn = self._take(key)
        if conn is not None:
            try:
                return self._send(key, conn, target, headers)
            except _FAILED_REUSE:  # closed by the server as we sent: not this URL's fault
                conn.close()
            except BaseException:
                conn.close()
                raise
        tls = self._context() if scheme == "https" else None
        conn = _Connection(host, key[2], self._guard, connect_timeout, read_timeout, tls)
        try:
            return self._send(key, conn, target, headers)
        except BaseException:
            conn.close()
            raise

    def _send(self, key: tuple[str, str, int], conn: _Connection, target: str,
              headers: dict[str, str]) -> Exchange:
        conn.request("GET", target, headers=headers)
        return Exchange(self, key, conn, conn.getresponse())

    def _take(self, key: tuple[str, str, int]) -> _Connection | None:
        """An idle connection to ``key`` the server has not closed, under the current attempt's deadline."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            if conn is None:
                return None
            # an idle connection with something to read was closed by the server (or holds junk)
            if conn.sock is not None and not _readable(conn.sock):
                self._guard.watch(conn.sock)
                return conn
            conn.close()

    def put(self, key: tuple[str, str, int], conn: _Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self._per_host:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


def _readable(sock: socket.socket) -> bool:
    """Whether ``sock`` has something to read now (poll where there is one: select fails past fd 1023)."""
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True
