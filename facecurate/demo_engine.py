"""A loopback image-search engine for ``facecurate demo``: Bing's async answer over in-memory photos.

The demo crawls with the real ``bing`` engine and downloader, so this server speaks exactly what they read
from www.bing.com (``GET /images/async?q=…&first=…&count=…``: an HTML fragment of ``li > div.iuscp >
a.iusc[m]`` results whose ``m`` attribute is HTML-escaped JSON with ``murl``/``purl``/``t``, the size in
``span.nowrap``, ``data-nextUrl`` on the container; see PROTOCOLS.md), plus the photo files and a page per
photo for the provenance links. It serves at most ``page_size`` results a page whatever ``count`` asks —
Bing also returns fewer than asked — so the demo shows pagination by ``first=`` at work.

It binds 127.0.0.1 on a free port, answers from threads, and stops (socket closed) when its ``with`` block
ends, on an error or Ctrl-C too.
"""

from __future__ import annotations

import contextlib
import html
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

PAGE_SIZE = 4  # results per page at most: small, so each demo query takes a few pages


@dataclass(frozen=True)
class Listing:
    """One photo the engine lists: served at ``/photos/<name>``, described by ``/pages/<stem>.html``."""

    name: str              # file name, e.g. "closed_eyes.jpg"
    title: str             # the result title (Bing's ``t``)
    data: bytes            # the file's bytes
    width: int
    height: int
    content_type: str = "image/jpeg"

    @property
    def stem(self) -> str:
        return self.name.rsplit(".", 1)[0]


def results_page(base: str, term: str, listings: list[Listing], first: int, total: int) -> str:
    """Bing's async HTML for results ``first``.. (1-based) of ``term``. Pure, so a test can read it."""
    items = []
    for i, it in enumerate(listings):
        url, page = f"{base}/photos/{quote(it.name)}", f"{base}/pages/{quote(it.stem)}.html"
        m = json.dumps({"cid": f"demo{first + i}", "purl": page, "murl": url, "turl": f"{url}?thumb=1",
                        "md5": "", "t": it.title, "mid": f"DEMO{first + i:04d}", "desc": ""}, ensure_ascii=False)
        fmt = it.name.rsplit(".", 1)[-1].lower()
        items.append(
            f'<li data-idx={first + i} style="width:232px; height: 200px"><div class="iuscp varh" '
            f'style="width:232px"><div class="imgpt"><a class="iusc" style="height:200px;width:232px" '
            f'm="{html.escape(m)}" href="/images/search?view=detailV2&amp;mediaurl={quote(url, safe="")}">'
            f'<div class="img_cont hoff"><img class="mimg" height="200" width="232" src="{html.escape(url)}?thumb=1" '
            f'alt="{html.escape(it.title)}"/></div></a><div class="img_info hon"><span class="nowrap">'
            f'{it.width} x {it.height} &#183; {fmt}</span><div class="lnkw"><a href="{html.escape(page)}">'
            f"127.0.0.1</a></div></div></div></div></li>")
    nxt = first + len(listings)
    next_url = f"/images/async?q={quote(term)}&amp;first={nxt}&amp;count=35" if nxt <= total else ""
    return (f'<div class="dg_b" role="main"><div id="mmComponent_images_1" class="dgControl hover" '
            f'data-nextUrl="{next_url}"><ul data-row=0 class="dgControl_list ">{"".join(items)}</ul></div></div>')


class DemoEngine:
    """The server. ``results`` maps each search term to its ranked listings; every listing is downloadable."""

    def __init__(self, results: dict[str, list[Listing]], page_size: int = PAGE_SIZE) -> None:
        self.results = results
        self.page_size = page_size
        self.files = {it.name: it for items in results.values() for it in items}
        self.requests = 0
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="facecurate-demo-engine", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, str, bytes]:
        """(status, content type, body) for one GET: the routing, apart from the socket handling."""
        if path == "/images/async":
            term, items = query.get("q", ""), self.results.get(query.get("q", ""), [])
            first = max(1, _int(query.get("first"), 1))
            count = min(self.page_size, max(1, _int(query.get("count"), 35)))
            body = results_page(self.base_url, term, items[first - 1:first - 1 + count], first, len(items))
            return 200, "text/html; charset=utf-8", body.encode()
        if path.startswith("/photos/") and (it := self.files.get(path.removeprefix("/photos/"))):
            return 200, it.content_type, it.data
        if path.startswith("/pages/") and path.endswith(".html"):
            stem = path.removeprefix("/pages/").removesuffix(".html")
            it = next((i for i in self.files.values() if i.stem == stem), None)
            if it is not None:
                body = (f"<!DOCTYPE html><html><head><title>{html.escape(it.title)}</title></head><body>"
                        f'<h1>{html.escape(it.title)}</h1><img src="/photos/{quote(it.name)}"></body></html>')
                return 200, "text/html; charset=utf-8", body.encode()
        return 404, "text/plain", b"not found"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        engine = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # the demo's console stays clean
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                with engine._lock:
                    engine.requests += 1
                status, ctype, body = engine.answer(parts.path, query)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

        return Handler

    def __enter__(self) -> DemoEngine:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving and free the port; safe to call twice."""
        if self._thread.is_alive():
            self.httpd.shutdown()
            self._thread.join(timeout=5)
        self.httpd.server_close()


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default
