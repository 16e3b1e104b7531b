"""The image downloads' own HTTP client (facecurate.crawl.http.connections), against real loopback servers:
raw TCP ones where the test needs bytes no well-behaved server sends (repeated headers, a connection closed
without notice, a trickled TLS handshake), and a TLS server whose certificate comes from a test CA (trustme)."""

from __future__ import annotations

import contextlib
import gzip
import socket
import ssl
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trustme

from facecurate.crawl.http import TRANSIENT, Http
from tests.fakeweb import ScriptedServer, http_settings, make_jpeg

JPEG = make_jpeg(7, (96, 80))


_settings = partial(http_settings, per_host_rate=0.0, total_timeout=5.0, retries=2, allow_private=True)


def _answer(body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return (f"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n{head}\r\n").encode() + body


def test_kept_alive_connections_are_reused_across_requests():
    with ScriptedServer(lambda line: _answer(JPEG)) as server:
        http = Http(_settings())
        results = [http.get(server.url(f"/{i}.jpg")) for i in range(20)]
        http.close()
    assert all(r.ok and r.body == JPEG and r.attempts == 1 for r in results)
    assert server.connections == 1


def test_a_connection_the_server_closed_while_idle_is_replaced_without_a_failure():
    # each answer says nothing of closing, then the server hangs up: the next request must not fail for it
    with ScriptedServer(lambda line: _answer(JPEG), keep=False) as server:
        http = Http(_settings())
        results = []
        for i in range(8):
            results.append(http.get(server.url(f"/{i}.jpg")))
            time.sleep(0.02)  # the close has reached us before the next request (the check before reuse)
        http.close()
    assert all(r.ok and r.body == JPEG and r.attempts == 1 for r in results), [r.message for r in results]
    assert server.connections == 8


def test_a_connection_closed_as_the_request_goes_out_is_retried_on_a_new_one_at_once():
    # no pause: the hang-up may land after the idle check, while the next request is on its way
    with ScriptedServer(lambda line: _answer(JPEG), keep=False) as server:
        http = Http(_settings(retries=0))
        results = [http.get(server.url(f"/{i}.jpg")) for i in range(30)]
        http.close()
    assert all(r.ok and r.body == JPEG for r in results), [r.message for r in results if not r.ok]


def test_bytes_a_server_sends_after_an_answer_cost_the_next_url_nothing():
    # each answer is followed, a little later, by junk on the same kept-alive connection: the next request
    # must not read it as its status line (or, if it does, go again on a new connection at once)
    def answer(line: str) -> bytes:
        return _answer(JPEG)

    with ScriptedServer(answer) as server:
        server.trailing = b"\0\0 not http\r\n"
        http = Http(_settings(retries=0))
        results = [http.get(server.url(f"/{i}.jpg")) for i in range(12)]
        http.close()
    assert all(r.ok and r.body == JPEG for r in results), [r.message for r in results if not r.ok]


def _two_gzip_members(data: bytes) -> bytes:
    half = len(data) // 2
    return gzip.compress(data[:half]) + gzip.compress(data[half:])


def _raw_deflate(data: bytes) -> bytes:
    """Deflate without the zlib wrapper, as some servers send ``Content-Encoding: deflate``."""
    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()


def test_a_deflate_body_sent_a_byte_at_a_time_is_still_told_zlib_from_raw():
    body = zlib.compress(JPEG)

    def answer(line: str) -> bytes:
        return _answer(body, "Content-Encoding: deflate")

    with ScriptedServer(answer) as server:
        server.dribble = 1  # the first bytes one by one: the zlib header arrives split
        http = Http(_settings())
        result = http.get(server.url("/a.jpg"))
        http.close()
    assert result.ok and result.body == JPEG, result.message


@pytest.mark.parametrize(("encoding", "encode"), [
    ("gzip", gzip.compress),
    ("x-gzip", gzip.compress),
    ("gzip", _two_gzip_members),
    ("deflate", zlib.compress),  # zlib-wrapped, as RFC 9110 says
    ("deflate", _raw_deflate),
])
def test_gzip_and_deflate_bodies_are_decoded(encoding: str, encode: Callable[[bytes], bytes]):
    body = encode(JPEG)
    with ScriptedServer(lambda line: _answer(body, f"Content-Encoding: {encoding}")) as server:
        http = Http(_settings())
        result = http.get(server.url("/a.jpg"))
        again = http.get(server.url("/b.jpg"))  # the connection stays usable after a decoded body
        http.close()
    assert result.ok and result.body == JPEG, result.message
    assert again.ok and again.body == JPEG and server.connections == 1


def test_a_compressed_bomb_stops_at_the_byte_cap_without_expanding_in_memory():
    bomb = gzip.compress(b"\0" * (256 << 20), compresslevel=9)  # 256 MiB of zeros in ~250 KB
    with ScriptedServer(lambda line: _answer(bomb, "Content-Encoding: gzip")) as server:
        http = Http(_settings(max_bytes=2 << 20))
        tracemalloc.start()
        try:
            result = http.get(server.url("/bomb.jpg"))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        http.close()
    assert result.reason == "too_large" and "2,097,152-byte cap" in result.message
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB held decoding a bomb capped at 2 MiB"


def test_repeated_x_robots_tag_headers_are_all_read():
    # an opt-out in the second of two X-Robots-Tag headers is an opt-out (they are one list, RFC 9110 5.3)
    with ScriptedServer(lambda line: _answer(JPEG, "X-Robots-Tag: noindex", "X-Robots-Tag: noai")) as server:
        http = Http(_settings())
        result = http.get(server.url("/a.jpg"))
        http.close()
    assert result.reason == "robots" and result.body is None


def test_a_body_cut_short_of_its_content_length_is_truncated_and_retried():
    def short(line: str) -> bytes:
        return _answer(JPEG)[: -len(JPEG) // 2]

    with ScriptedServer(short, keep=False) as server:
        http = Http(_settings(retries=1))
        result = http.get(server.url("/a.jpg"))
        http.close()
    assert result.reason == "truncated" and result.reason in TRANSIENT and result.attempts == 2
    assert result.body is None


def test_spaces_and_non_ascii_in_a_url_are_percent_encoded_on_the_wire():
    with ScriptedServer(lambda line: _answer(JPEG)) as server:
        http = Http(_settings())
        result = http.get(server.url("/a b/gesicht ü.jpg?q=ä x&r=1#frag"))
        http.close()
    assert result.ok, result.message
    assert server.lines == ["GET /a%20b/gesicht%20%C3%BC.jpg?q=%C3%A4%20x&r=1 HTTP/1.1"]


# -- TLS ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_host() -> Any:
    """An https image host on 127.0.0.1 whose certificate a test CA signed (not in any system store)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(JPEG)))
            self.end_headers()
            if self.path.startswith("/slow"):  # a byte every 0.3 s: minutes for the whole body
                with contextlib.suppress(OSError):
                    for i in range(len(JPEG)):
                        self.wfile.write(JPEG[i:i + 1])
                        self.wfile.flush()
                        time.sleep(0.3)
                return
            self.wfile.write(JPEG)

    class Quiet(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # the client that refuses the certificate hangs up mid-handshake

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    httpd = Quiet(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    with ca.cert_pem.tempfile() as ca_file:
        yield f"https://127.0.0.1:{httpd.server_address[1]}", ca_file
    httpd.shutdown()
    httpd.server_close()


def test_https_is_verified_against_the_ca_bundle(tls_host: tuple[str, str], monkeypatch: pytest.MonkeyPatch):
    base, ca_file = tls_host
    for key in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    http = Http(_settings(retries=0))
    refused = http.get(f"{base}/a.jpg")
    http.close()
    assert not refused.ok and refused.body is None
    assert "certificate" in refused.message and "REQUESTS_CA_BUNDLE" in refused.message

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_file)
    http = Http(_settings(retries=0))
    results = [http.get(f"{base}/{i}.jpg") for i in range(3)]
    http.close()
    assert all(r.ok and r.body == JPEG for r in results), [r.message for r in results]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("session", [False, True], ids=["image download", "result page (requests)"])
def test_a_tls_body_trickle_ends_at_the_deadline(tls_host: tuple[str, str], monkeypatch: pytest.MonkeyPatch,
                                                 session: bool):
    # the TLS socket, not only the TCP one under it, must be cut: reads go through the TLS socket
    base, ca_file = tls_host
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_file)
    http = Http(_settings(total_timeout=1.5))
    started = time.monotonic()
    result = http.get(f"{base}/slow.jpg", session=session)
    took = time.monotonic() - started
    http.close()
    assert result.reason == "too_slow", result.message
    assert took < 4.0


@pytest.mark.timeout(60)
def test_a_trickled_tls_handshake_ends_at_the_deadline():
    # a TLS record header that announces 256 bytes, then one byte every 0.3 s: each read is quick, the
    # handshake never completes; only the URL's deadline (1.5 s) can end it
    stop = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn, contextlib.suppress(OSError):
            conn.sendall(b"\x16\x03\x03\x01\x00")
            while not stop.wait(0.3):
                conn.sendall(b"\x02")

    threading.Thread(target=serve, daemon=True).start()
    http = Http(_settings(total_timeout=1.5, read_timeout=5.0, connect_timeout=5.0))
    started = time.monotonic()
    result = http.get(f"https://127.0.0.1:{server.getsockname()[1]}/a.jpg")
    took = time.monotonic() - started
    http.close()
    stop.set()
    server.close()
    assert result.reason == "too_slow", result.message
    assert took < 4.0
