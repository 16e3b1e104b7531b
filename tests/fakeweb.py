"""Loopback stand-ins for the five search engines and for image hosts that misbehave.

Every server is a real threaded ``http.server`` on 127.0.0.1 (port 0). The engine answers are built in the
shapes of the real fragments documented in PROTOCOLS.md (Bing ``a.iusc[m]`` HTML, DuckDuckGo ``vqd`` + ``i.js``
JSON, Naver's ``imageSearchTabData`` JavaScript literal, the Commons API ``query.pages`` object, Google's
click-to-open grid with lazy loading), written here from scratch; images are generated with numpy/PIL.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import numpy as np
from PIL import Image

from facecurate.crawl.http import HttpSettings
from facecurate.workspace import Config, default_config, options_from

BLOCKED_TERM = "blocked term"
STUCK_TERM = "stuck page"  # an engine that ignores the page offset and repeats its first page
CHANGED_TERM = "changed layout"
FLAKY_TERM = "flaky page"  # Bing answers its first page empty once, then normally (seen in 2026)
CONSENT_TERM = "consent wall"
CONSENT_PAGE = ("<html><body><form action='https://consent.google.com/save'><h1>Before you continue to Google"
                "</h1><button>Accept all</button></form></body></html>")


def http_settings(**overrides: object) -> HttpSettings:
    """[crawl] settings for a test's own Http: the defaults with a contact, short backoff and no per-host
    spacing to wait out, and ``overrides`` on top."""
    base: dict[str, object] = {"contact": "t@example.org", "per_host_rate": 1000.0, "backoff": 0.01,
                               "backoff_max": 0.05, "read_timeout": 5.0}
    return options_from(HttpSettings, Config(default_config()), "crawl", **{**base, **overrides})


def make_jpeg(seed: int, size: tuple[int, int] = (72, 64)) -> bytes:
    """A small distinct JPEG per seed (smooth gradients plus noise, so it is a plausible photo-sized file)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * (seed % 7 + 1)) % 256, (yy * (seed % 5 + 2)) % 256,
                     ((xx + yy) * (seed % 3 + 1)) % 256], axis=2)
    pixels = np.clip(base + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@dataclass
class Reply:
    """What a fake server answers. ``trickle`` sends the body slowly; ``truncate`` closes it early."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    trickle: float = 0.0          # seconds between 1 KiB chunks
    truncate: bool = False        # announce the full length, send half, close
    chunked: bool = False         # no Content-Length (the byte cap must still hold)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


Handler = Callable[[Request], Reply]


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up early (timeouts, byte caps) are expected here: no traceback on stderr."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class LoopbackServer:
    """A real HTTP server on 127.0.0.1 that answers through ``handler`` and logs every request."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        outer = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                req = Request("GET", parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()},
                              {k.lower(): v for k, v in self.headers.items()})
                with outer._lock:
                    outer.requests.append(req)
                reply = outer.handler(req)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._send(reply)

            def _send(self, reply: Reply) -> None:
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                if reply.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(reply.body), 1024):
                        chunk = reply.body[i:i + 1024]
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_header("Content-Length", str(len(reply.body)))
                if reply.truncate:
                    self.send_header("Connection", "close")
                self.end_headers()
                if reply.truncate:
                    self.wfile.write(reply.body[: len(reply.body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if reply.trickle:
                    for i in range(0, len(reply.body), 1024):
                        self.wfile.write(reply.body[i:i + 1024])
                        self.wfile.flush()
                        time.sleep(reply.trickle)
                    return
                self.wfile.write(reply.body)

        self.httpd = _QuietServer(("127.0.0.1", 0), _H)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def hits(self, path: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.path == path)

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


_Server = TypeVar("_Server", bound="RawServer")


class RawServer:
    """A raw TCP server on 127.0.0.1 for answers no well-behaved HTTP server sends: each accepted connection
    goes to :meth:`_answer` on a thread of its own. Counts the connections it accepted."""

    def __init__(self) -> None:
        self.connections = 0
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def __enter__(self: _Server) -> _Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sock.close()


class TrickleServer(RawServer):
    """Sends a valid HTTP answer ``byte_every`` seconds per byte, from the first byte of the status line
    (``stage="status"``), of the headers (``"headers"``) or of the body (``"body"``) on: the shapes of answer
    that a per-read socket timeout never ends."""

    def __init__(self, stage: str, body: bytes = b"", byte_every: float = 1.0) -> None:
        super().__init__()
        self.stage, self.body, self.byte_every = stage, body or make_jpeg(1), byte_every

    def _answer(self, conn: socket.socket) -> None:
        status = b"HTTP/1.1 200 OK\r\n"
        headers = (f"Content-Type: image/jpeg\r\nContent-Length: {len(self.body)}\r\n"
                   f"X-Padding: {'x' * 64}\r\n\r\n").encode()
        fast, slow = {"status": (b"", status + headers + self.body), "headers": (status, headers + self.body),
                      "body": (status + headers, self.body)}[self.stage]
        with conn, contextlib.suppress(OSError):
            conn.settimeout(5)
            conn.recv(65536)
            conn.sendall(fast)
            for i in range(len(slow)):
                if self._stop.wait(self.byte_every):
                    return
                conn.sendall(slow[i:i + 1])


class ScriptedServer(RawServer):
    """Reads each request's head and answers ``answer(request_line)`` bytes as they are; ``keep`` False closes
    the connection after one answer without saying so (no ``Connection: close``). Records the request lines."""

    def __init__(self, answer: Callable[[str], bytes], keep: bool = True) -> None:
        super().__init__()
        self.answer, self.keep = answer, keep
        self.dribble = 0  # send the answer's body one byte per write for this many bytes, then the rest
        self.trailing = b""  # sent 10 ms after each answer, as if it were part of it
        self.lines: list[str] = []

    def _answer(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(5)
            reader = conn.makefile("rb")
            while True:
                line = reader.readline().decode("latin-1").strip()
                if not line:
                    return
                while reader.readline() not in (b"\r\n", b"\n", b""):
                    pass
                self.lines.append(line)
                data = self.answer(line)
                if self.dribble:
                    head = data.index(b"\r\n\r\n") + 4
                    conn.sendall(data[:head])
                    for i in range(head, head + self.dribble + 1):
                        conn.sendall(data[i:i + 1])
                        time.sleep(0.05)
                    data = data[head + self.dribble + 1:]
                conn.sendall(data)
                if self.trailing:
                    time.sleep(0.01)
                    conn.sendall(self.trailing)
                if not self.keep:
                    return


# -- image host with faults ---------------------------------------------------------------------------------

class ImageHost:
    """``/img/<n>.jpg`` serves image n; ``/fault/<kind>/<n>.jpg`` misbehaves in one documented way."""

    def __init__(self, delay: float = 0.0, huge_bytes: int = 400_000) -> None:
        self.delay = delay
        self.huge_bytes = huge_bytes
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.inflight = self.max_inflight = 0
        self.starts: list[float] = []  # time.monotonic() of each request's arrival, for measured rates
        self.server = LoopbackServer(self.handle)

    def _nth(self, path: str) -> int:
        with self._lock:
            self._counts[path] = self._counts.get(path, 0) + 1
            return self._counts[path]

    @staticmethod
    def seed(path: str) -> int:
        return int(Path(path).stem)

    def handle(self, req: Request) -> Reply:
        with self._lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            self.starts.append(time.monotonic())
        try:
            if self.delay:
                time.sleep(self.delay)
            return self._answer(req)
        finally:
            with self._lock:
                self.inflight -= 1

    def _answer(self, req: Request) -> Reply:
        parts = req.path.strip("/").split("/")
        jpeg = {"Content-Type": "image/jpeg"}
        if parts[0] in ("img", "mirror"):
            return Reply(body=make_jpeg(self.seed(req.path)), headers=jpeg)
        if parts[0] != "fault":
            return Reply(404, b"not found")
        kind, n = parts[1], self._nth(req.path)
        good = make_jpeg(self.seed(req.path))
        if kind == "429-once":
            return Reply(429, b"slow down", {"Retry-After": "1"}) if n == 1 else Reply(body=good, headers=jpeg)
        if kind == "503-date":
            when = formatdate(time.time() + 1, usegmt=True)
            return Reply(503, b"busy", {"Retry-After": when}) if n == 1 else Reply(body=good, headers=jpeg)
        if kind == "500-then-ok":
            return Reply(500, b"oops") if n == 1 else Reply(body=good, headers=jpeg)
        if kind == "500-always":
            return Reply(500, b"oops")
        if kind == "slow":  # a body that would take ~10 s: past any total_timeout a test sets
            return Reply(body=good + b"\0" * 16_000, headers=jpeg, trickle=0.5)
        if kind == "cut":
            return Reply(body=good, headers=jpeg, truncate=True)
        if kind == "truncated-jpeg":
            return Reply(body=good[: len(good) * 2 // 3], headers=jpeg)
        if kind == "html":
            return Reply(body=b"<!DOCTYPE html><html><body>Image not found</body></html>", headers=jpeg)
        if kind == "svg":
            return Reply(body=b'<svg xmlns="http://www.w3.org/2000/svg" width="90" height="90"></svg>',
                         headers={"Content-Type": "image/svg+xml"})
        if kind == "huge":
            return Reply(body=good + b"\0" * self.huge_bytes, headers=jpeg)
        if kind == "huge-chunked":
            return Reply(body=good + b"\0" * self.huge_bytes, headers=jpeg, chunked=True)
        if kind == "small":
            return Reply(body=make_jpeg(self.seed(req.path), (12, 10)), headers=jpeg)
        if kind == "redirect":
            return Reply(302, b"", {"Location": f"/img/{Path(req.path).name}"})
        if kind == "loop":
            return Reply(302, b"", {"Location": req.path})
        if kind == "404":
            return Reply(404, b"gone")
        if kind == "noai":
            return Reply(body=good, headers={**jpeg, "X-Robots-Tag": "noai"})
        if kind == "noimageai":
            return Reply(body=good, headers={**jpeg, "X-Robots-Tag": "googlebot: noindex, noimageai"})
        if kind == "hotlink":
            ok = req.headers.get("referer", "").startswith("http://example.org/")
            return Reply(body=good, headers=jpeg) if ok else Reply(403, b"hotlinking forbidden")
        return Reply(404, b"unknown fault")


# -- search engines ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    url: str
    page: str
    title: str
    width: int = 72
    height: int = 64


CAPTCHA_PAGE = ("<html><head><title>Verify</title></head><body><div id='captcha'>Our systems have detected "
                "unusual traffic from your computer network. Please solve the CAPTCHA.</div></body></html>")


class FakeEngines:
    """One server answering like all five engines; ``results[term]`` is the full ranked list per term."""

    def __init__(self, results: dict[str, list[Item]]) -> None:
        self.results = results
        self.server = LoopbackServer(self.handle)
        self.vqd = "4-21176171812345_aBc-9"  # 2026 tokens hold letters and '_', not only digits
        self.flaky_left = 1
        self.google_layout = "2024"  # "2026": grid of encrypted-tbn thumbnails, no dTDiAc (see docs/engines.md)

    def _items(self, req: Request, key: str) -> list[Item]:
        return self.results.get(req.query.get(key, ""), [])

    def handle(self, req: Request) -> Reply:
        term = req.query.get("q") or req.query.get("query") or req.query.get("gsrsearch", "").removeprefix(
            "filetype:bitmap ")
        if term == BLOCKED_TERM and not req.path.startswith("/sorry"):
            if req.path in ("/search", "/wml/search"):
                return Reply(302, b"", {"Location": "/sorry/index?continue=x"})
            return Reply(200, CAPTCHA_PAGE.encode(), {"Content-Type": "text/html; charset=utf-8"})
        if term == CONSENT_TERM:
            return Reply(200, CONSENT_PAGE.encode(), {"Content-Type": "text/html; charset=utf-8"})
        if term == CHANGED_TERM:
            return Reply(200, b"<html><body><div class='new-grid-2031'>" + b"<p>nothing we know</p>" * 5 +
                         b"</div></body></html>", {"Content-Type": "text/html; charset=utf-8"})
        route = {"/images/async": self.bing, "/": self.ddg_home, "/i.js": self.ddg_json,
                 "/search.naver": self.naver, "/w/api.php": self.wikimedia, "/search": self.google,
                 "/wml/search": self.google_wml,
                 "/sorry/index": lambda r: Reply(200, CAPTCHA_PAGE.encode(), {"Content-Type": "text/html"}),
                 "/images": self.thumb}.get(req.path)
        if route is None:
            return Reply(404, b"no route")
        return route(req)

    # Bing: the async HTML, in the structure of the real 2020 answer
    def bing(self, req: Request) -> Reply:
        term = req.query.get("q", "")
        first, count = int(req.query.get("first", "1")), int(req.query.get("count", "35"))
        if term == STUCK_TERM:
            first = 1
        if term == FLAKY_TERM and self.flaky_left:
            self.flaky_left -= 1
            return Reply(200, b"", {"Content-Type": "text/html; charset=utf-8"})
        items = self.results.get(term, [])[first - 1:first - 1 + count]
        if not items and first > 1:
            return Reply(200, b"", {"Content-Type": "text/html; charset=utf-8"})
        lis = []
        for i, it in enumerate(items):
            m = json.dumps({"cid": f"c{i}", "purl": it.page, "murl": it.url, "turl": it.url + "?thumb",
                            "md5": "0" * 32, "t": it.title, "mid": f"M{i}", "desc": ""}, ensure_ascii=False)
            lis.append(
                f'<li data-idx={first + i} style="width:232px; height: 200px"><div class="iuscp varh">'
                f'<div class="imgpt"><a class="iusc" style="height:200px;width:232px" m="{html.escape(m)}" '
                f'href="/images/search?view=detailV2&amp;mediaurl={quote(it.url, safe="")}">'
                f'<div class="img_cont hoff"><img class="mimg" height="200" width="232" src="{it.url}?thumb" '
                f'alt="{html.escape(it.title)}"/></div></a><div class="img_info hon"><span class="nowrap">'
                f'{it.width} x {it.height} &#183; jpeg</span><div class="lnkw"><a href="{it.page}">site</a></div>'
                f"</div></div></div></li>")
        nxt = f"/images/async?q={quote(term)}&amp;first={first + len(items)}&amp;count=35"
        body = (f'<div class="dg_b" role="main"><div id="mmComponent_images_1" class="dgControl hover" '
                f'data-nextUrl="{nxt}"><ul data-row=0 class="dgControl_list ">{"".join(lis)}</ul></div></div>')
        return Reply(200, body.encode(), {"Content-Type": "text/html; charset=utf-8"})

    # DuckDuckGo: the vqd page, then i.js JSON (403 without the token)
    def ddg_home(self, req: Request) -> Reply:
        body = f'<html><script>DDG.deep.initialize("/d.js?q=x&vqd={self.vqd}&p=1");vqd="{self.vqd}";</script></html>'
        return Reply(200, body.encode(), {"Content-Type": "text/html; charset=utf-8"})

    def ddg_json(self, req: Request) -> Reply:
        # 2026: no token, no referer, an Accept-Language header (May) or the old f= / missing bpia (Feb): refused
        if req.query.get("vqd") != self.vqd or not req.headers.get("referer") or \
                "accept-language" in req.headers or "f" in req.query or req.query.get("bpia") != "1":
            return Reply(403, b"", {"Content-Type": "text/html"})
        term, s = req.query.get("q", ""), int(req.query.get("s", "0"))
        all_items = self.results.get(term, [])
        items = all_items[s:s + 10]
        data: dict[str, Any] = {"ads": None, "query": term, "queryEncoded": quote(term), "response_type": "images",
                                "vqd": {term: self.vqd}, "results": [
                                    {"source": "Bing", "width": it.width, "height": it.height, "title": it.title,
                                     "thumbnail": it.url + "?thumb", "url": it.page, "image": it.url,
                                     "image_token": "t", "thumbnail_token": "t"} for it in items]}
        if s + 10 < len(all_items):
            data["next"] = f"i.js?q={quote(term)}&o=json&p=1&s={s + 10}&u=bing&f=,,,&l=us-en"
        return Reply(200, json.dumps(data).encode(), {"Content-Type": "application/json"})

    # Naver: a JavaScript object literal (bare keys, single quotes, trailing commas)
    def naver(self, req: Request) -> Reply:
        term, start = req.query.get("query", ""), int(req.query.get("start", "1"))
        items = self.results.get(term, [])[start - 1:start - 1 + 50]
        ad = ("{ type: 'shopAd', originalUrl: 'https://shopping.example/ad.jpg', link: 'https://shop.example/', "
              "title: 'sale', orgWidth: 500, orgHeight: 500, },\n")
        rows = ad + "".join(
            f"{{ type: 'image', originalUrl: '{it.url}', thumb: \"{it.url}?type=a340\", link: '{it.page}', "
            f"title: '<b>{html.escape(it.title)}</b> \\'quoted\\'', source: 'blog', orgWidth: {it.width}, "
            f"orgHeight: {it.height}, isAdult: !1, }},\n" for it in items)
        body = (f"<html><body><script>\nvar x = {{ imageSearchTabData: {{ content: {{ items: [] }} }} }};\n"
                f"var  imageSearchTabData={{ content: {{ items: [\n{rows}], "
                f"total: {len(self.results.get(term, []))}, }}, query: '{term}', extra: undefined, }};\n"
                f"</script></body></html>")
        return Reply(200, body.encode(), {"Content-Type": "text/html; charset=UTF-8"})

    # Wikimedia Commons: query.pages keyed by page id (deliberately not in rank order)
    def wikimedia(self, req: Request) -> Reply:
        if "facecurate" not in req.headers.get("user-agent", ""):
            return Reply(403, b"Please set a user-agent that identifies your tool", {"Content-Type": "text/plain"})
        term = req.query.get("gsrsearch", "").removeprefix("filetype:bitmap ")
        offset, limit = int(req.query.get("gsroffset", "0")), int(req.query.get("gsrlimit", "50"))
        all_items = self.results.get(term, [])
        items = all_items[offset:offset + limit]
        pages = {}
        for i, it in reversed(list(enumerate(items))):
            pageid = 1000 + offset + i
            pages[str(pageid)] = {"pageid": pageid, "ns": 6, "title": f"File:{it.title}.jpg",
                                  "index": offset + i + 1, "imagerepository": "shared", "imageinfo": [{
                                      "size": 1234, "width": it.width, "height": it.height, "url": it.url,
                                      "thumburl": f"{it.url}?width={req.query.get('iiurlwidth', '')}",
                                      "descriptionurl": it.page, "mime": "image/jpeg", "user": "Uploader",
                                      "extmetadata": {
                                          "ObjectName": {"value": it.title, "source": "mediawiki-metadata"},
                                          "Artist": {"value": f'<a href="https://x.org/u">Author {i}</a>',
                                                     "source": "commons-desc-page"},
                                          "LicenseShortName": {"value": "CC BY-SA 4.0", "source": "x"}}}]}
        data: dict[str, Any] = {"batchcomplete": ""}
        if pages:
            data["query"] = {"pages": pages}
        if offset + limit < len(all_items):
            data["continue"] = {"gsroffset": offset + limit, "continue": "gsroffset||"}
        return Reply(200, json.dumps(data).encode(), {"Content-Type": "application/json; charset=utf-8"})

    # Google: a grid that lazy-loads on scroll, and a side panel opened by a click
    def thumb(self, req: Request) -> Reply:
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (200, 200, 200)).save(buf, "PNG")
        return Reply(200, buf.getvalue(), {"Content-Type": "image/png"})

    def google(self, req: Request) -> Reply:
        term = req.query.get("q", "")
        items = self.results.get(term, [])
        if self.google_layout == "2026":
            # thumbnails on Google's thumbnail host, as in 2026; the page's CSP lets the browser load images only
            # from loopback, so the test never reaches the real host (the src attribute is all the parser reads)
            data = [{"thumb": f"https://encrypted-tbn0.gstatic.com/images?q=tbn:ANd9Gc{i}", "full": it.url,
                     "page": it.page, "title": it.title} for i, it in enumerate(items)]
            page = GOOGLE_PAGE.replace("d.setAttribute('jsname', 'dTDiAc');", "d.className = 'tile';").replace(
                "d.setAttribute('data-ri', String(shown));", "")
            return Reply(200, page.replace("__DATA__", json.dumps(data)).encode(),
                         {"Content-Type": "text/html; charset=utf-8",
                          "Content-Security-Policy": "default-src 'self' 'unsafe-inline'; img-src 'self' http://127.0.0.1:*"})
        data = [{"thumb": f"/images?q=tbn:ANd9Gc{i}", "full": it.url, "page": it.page, "title": it.title}
                for i, it in enumerate(items)]
        page = GOOGLE_PAGE.replace("__DATA__", json.dumps(data))
        return Reply(200, page.encode(), {"Content-Type": "text/html; charset=utf-8"})


    # Google's feature-phone page (2026): /imgres links, only for a feature-phone agent
    def google_wml(self, req: Request) -> Reply:
        if "Nokia" not in req.headers.get("user-agent", ""):
            return Reply(200, b"<html><body><noscript>Please enable JavaScript</noscript></body></html>",
                         {"Content-Type": "text/html"})
        term, start = req.query.get("q", ""), int(req.query.get("start", "0"))
        items = self.results.get(term, [])[start:start + 10]
        if not items:
            body = f"<html><body><p>Your search - {html.escape(term)} - did not match any image results.</p>"
        else:
            def imgres(i: int, it: Item) -> str:
                return html.escape(urlencode({"imgurl": it.url, "imgrefurl": it.page, "h": it.height, "w": it.width,
                                              "tbnid": f"ANd9Gc{start + i}", "docid": "d"}))
            links = "".join(
                f'<div><a href="/imgres?{imgres(i, it)}">'
                f'<img src="https://encrypted-tbn0.gstatic.com/images?q=tbn:ANd9Gc{start + i}" alt=""><br>'
                f"{html.escape(it.title)}</a></div>" for i, it in enumerate(items))
            body = f"<html><body><table><tr><td>{links}</td></tr></table>"
        page = '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "</body></html>"
        return Reply(200, page.encode(), {"Content-Type": "text/html; charset=utf-8"})


GOOGLE_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>Google Images</title>
<style>div[jsname="dTDiAc"],div.tile{width:560px;height:300px;display:inline-block;margin:4px}
div[jsname="dTDiAc"] img,div.tile img{width:540px;height:280px;display:inline-block}
#panel{position:fixed;right:0;top:0;width:300px;height:400px;background:#eee}</style></head>
<body><div id="grid"></div>
<div jsname="figiqf" id="panel"><a id="plink" href="#"><img id="pimg" src="" alt=""></a></div>
<script>
const DATA = __DATA__;
const grid = document.getElementById('grid');
let shown = 0, loading = false;
function openItem(i) {
  const img = document.getElementById('pimg');
  img.src = DATA[i].thumb;
  setTimeout(() => {
    document.getElementById('plink').href = DATA[i].page;
    img.alt = DATA[i].title;
    img.src = DATA[i].full;
  }, 40);
}
function more(n) {
  const stop = Math.min(DATA.length, shown + n);
  for (; shown < stop; shown++) {
    const d = document.createElement('div');
    d.setAttribute('jsname', 'dTDiAc');
    d.setAttribute('data-ri', String(shown));
    const i = shown;
    d.innerHTML = '<img alt="" src="' + DATA[i].thumb + '">';
    d.addEventListener('click', () => openItem(i));
    grid.appendChild(d);
  }
  loading = false;
}
window.addEventListener('scroll', () => {
  if (!loading && window.innerHeight + window.scrollY >= document.body.scrollHeight - 100) {
    loading = true;
    setTimeout(() => more(20), 60);
  }
});
more(20);
</script></body></html>"""


def items_for(host: ImageHost, seeds: list[int], kind: str = "img") -> list[Item]:
    return [Item(host.server.url(f"/{kind}/{s}.jpg"), f"http://example.org/page/{s}", f"photo {s}") for s in seeds]


def write_config(ws_root: Path, engines_base: str | None = None, **crawl: Any) -> None:
    """facecurate.toml for tests: loopback engines and image hosts (so allow_private is on), no page delay,
    tiny backoffs and timeouts."""
    values: dict[str, Any] = {"allow_private": True, "page_delay": 0.0, "per_host_rate": 1000.0, "backoff": 0.01,
                              "backoff_max": 0.05, "connect_timeout": 2.0,
                              "read_timeout": 2.0, "total_timeout": 5.0, "retries": 2, "scroll_wait": 0.8,
                              "browser_timeout": 8.0, "contact": "tests@example.org", **crawl}
    lines = ["[crawl]"]
    for k, v in values.items():
        lines.append(f"{k} = {json.dumps(v)}")
    if engines_base:
        for name in ("bing", "duckduckgo", "google", "google-browser", "naver", "wikimedia"):
            lines += [f"[engines.{name}]", f'base_url = "{engines_base}"']
    (ws_root / "facecurate.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def query_string(params: dict[str, Any]) -> str:
    return urlencode(params)
