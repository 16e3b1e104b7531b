"""The gallery's HTTP side: filters and counts, item pages, thumbnails, and the security rules (token,
cross-site writes, Host, path traversal) — through Flask's test client and raw HTTP on a loopback server."""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient
from PIL import Image
from typer.testing import CliRunner

from facecurate.catalog import Catalog
from facecurate.cli import app as cli_app
from facecurate.errors import FacecurateError
from facecurate.review import report, scoring, server
from facecurate.review.server import TOKEN_HEADER, create_app
from facecurate.workspace import Workspace
from tests.test_review_support import XSS, faces_by_name, reviewed_workspace, serving


@pytest.fixture
def rws(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Workspace:
    return reviewed_workspace(tmp_path_factory, tmp_path / "ws")


@pytest.fixture
def flask_app(rws: Workspace):
    return create_app(rws, token="t0ken")


@pytest.fixture
def client(flask_app) -> FlaskClient:
    return flask_app.test_client()


def _keys(client: FlaskClient, **params: str) -> list[str]:
    res = client.get("/api/query", query_string=params)
    assert res.status_code == 200, res.json
    assert res.json["count"] == len(res.json["keys"]) and res.json["total"] == 7
    return res.json["keys"]


def _key(rws: Workspace, name: str) -> str:
    with Catalog.open(rws.catalog_path) as cat:
        return f"f{faces_by_name(cat)[name]['id']}"


def _decide(client: FlaskClient, keys: list[str], decision: str, **headers: str):
    return client.post("/api/decide", json={"keys": keys, "decision": decision},
                       headers={TOKEN_HEADER: "t0ken", **headers})


def test_filters_count_what_they_show(client: FlaskClient, rws: Workspace):
    facets = client.get("/api/facets").json
    assert facets["statuses"] == {"reject": 3, "keep": 3, "no_face": 1} and facets["total"] == 7
    assert facets["reasons"]["mirroring"] == 2 and facets["queries"] == {"biden": 1, "obama": 3}
    if scoring.registry():  # the rules stage says which rule reads which measure
        assert facets["reason_scores"]["closed_eyes"] == "ear_mean"
    assert len(_keys(client)) == 7
    assert len(_keys(client, status="reject")) == 3
    assert len(_keys(client, status="reject", reason="mirroring")) == 2
    assert len(_keys(client, reason="no_face")) == 1 and len(_keys(client, status="no_face")) == 1
    assert len(_keys(client, query="obama")) == 3 and len(_keys(client, label="demo")) == 7
    assert len(_keys(client, label="(none)")) == 0
    # worst first: ear_mean is bad when low, mirroring when high
    ear = _keys(client, status="any", sort="score:ear_mean")
    assert ear[0] == _key(rws, "obama3.jpg") and ear[-1].startswith("i")  # no score: last
    assert _keys(client, sort="score:ear_mean", dir="best")[0] == _key(rws, "astronaut.jpg")
    assert _keys(client, sort="score:mirroring")[0] == _key(rws, "obama_partial_face.jpg")
    assert _keys(client, sort="reasons")[0] == _key(rws, "obama_partial_face.jpg")
    _decide(client, [_key(rws, "biden.jpg")], "kept")
    assert _keys(client, decision="kept") == [_key(rws, "biden.jpg")]
    assert len(_keys(client, status="reject", decision="none")) == 2
    # the status filter and counts are on the state in force: a person's keep over the rules' reject
    assert _key(rws, "biden.jpg") in _keys(client, status="keep") and len(_keys(client, status="reject")) == 2
    assert client.get("/api/facets").json["statuses"] == {"keep": 4, "reject": 2, "no_face": 1}
    cell = client.get(f"/api/items?keys={_key(rws, 'biden.jpg')}").json["items"][0]
    assert (cell["status"], cell["rule_status"], cell["review"]["decision"]) == ("keep", "reject", "kept")
    for bad in ({"status": "nope"}, {"sort": "score:x') --"}, {"decision": "maybe"}, {"reason": "x" * 600}):
        assert client.get("/api/query", query_string=bad).status_code == 400


def test_items_and_detail_carry_what_the_views_draw(client: FlaskClient, rws: Workspace):
    partial = _key(rws, "obama_partial_face.jpg")
    items = client.get(f"/api/items?keys={partial},i999,zzz,f1").json["items"]
    assert [i["key"] for i in items] == [partial, "f1"]
    assert items[0]["title"] == XSS and items[0]["reasons"] == ["mirroring", "no_headroom"]
    d = client.get(f"/api/item/{partial}").json
    assert len(d["face"]["landmarks"]) == 5 and len(d["face"]["quad"]) == 4 and len(d["face"]["bbox"]) == 4
    scores = {s["name"]: s for s in d["scores"]}
    assert scores["headroom_iod"]["worse"] == "low" and scores["mirroring"]["worse"] == "high"
    if scoring.registry():  # thresholds and rule names come from the rules stage's registry and settings
        assert scores["mirroring"]["threshold"] == 0.08 and scores["mirroring"]["fails"] is True
        assert scores["headroom_iod"]["rule"] == "no_headroom" and scores["ear_mean"]["fails"] is False
    src = d["sources"][0]
    assert (src["query"], src["engine"], src["license"], src["page_url"]) == (
        "obama", "bing", "CC BY 4.0", "https://example.org/page?id=1")
    assert d["duplicates"] is None and d["history"] == []  # no dedup columns, no decision yet
    _decide(client, [partial], "rejected")
    d = client.get(f"/api/item/{partial}").json
    assert d["review"]["decision"] == "rejected" and d["review"]["by"] == "tester"
    assert [(h["decision_before"], h["decision_after"]) for h in d["history"]] == [("none", "rejected")]
    assert client.get("/api/item/f999999").status_code == 404


def test_duplicate_group_shows_keeper_and_members(client: FlaskClient, rws: Workspace):
    with Catalog.open(rws.catalog_path) as cat, cat.transaction():
        faces = faces_by_name(cat)
        keeper, copy = faces["obama.jpg"]["id"], faces["obama2.jpg"]["id"]
        cat.dedup_set_faces([(1, None, None, None, None, keeper),
                             (1, keeper, 6, None, "perceptual", copy)])
    group = client.get(f"/api/item/f{copy}").json["duplicates"]
    assert [(m["key"], m["keeper"], m["distance"]) for m in group["members"]] == [
        (f"f{keeper}", True, None), (f"f{copy}", False, 6)]
    assert [m["status"] for m in group["members"]] == ["keep", "duplicate"]
    assert [m["current"] for m in group["members"]] == [False, True]


def test_thumbnails_are_small_cached_and_remade_when_stale(client: FlaskClient, rws: Workspace):
    key = _key(rws, "biden.jpg")
    first = client.get(f"/thumb/{key}")
    assert first.status_code == 200 and first.mimetype == "image/jpeg"
    cached = list((rws.root / ".cache" / "review").rglob("*.jpg"))
    assert len(cached) == 1 and max(Image.open(cached[0]).size) == 160
    stamp = cached[0].stat().st_mtime_ns
    assert client.get(f"/thumb/{key}").data == first.data and cached[0].stat().st_mtime_ns == stamp
    with Catalog.open(rws.catalog_path) as cat:
        crop = rws.resolve(faces_by_name(cat)["biden.jpg"]["crop_path"])
    Image.new("RGB", (256, 256), (255, 0, 0)).save(crop)  # a re-crop: newer file, the thumbnail follows
    redo = client.get(f"/thumb/{key}")
    assert redo.data != first.data and Image.open(cached[0]).getpixel((80, 80))[0] > 200
    rocket = _keys(client, status="no_face")[0]
    assert client.get(f"/thumb/{rocket}").status_code == 200  # the photo itself when there is no face
    image_id = client.get(f"/api/item/{key}").json["image_id"]
    preview = client.get(f"/preview/{image_id}")
    assert preview.status_code == 200 and max(Image.open(io.BytesIO(preview.data)).size) <= 1600
    assert not list(rws.tmp_dir.glob(".part-*"))


def test_writes_need_the_token_and_the_same_origin(client: FlaskClient, rws: Workspace):
    key = _key(rws, "biden.jpg")
    page = client.get("/").get_data(as_text=True)
    assert '<meta name="fc-token" content="t0ken">' in page
    body = {"keys": [key], "decision": "kept"}
    assert client.post("/api/decide", json=body).status_code == 403                       # no token
    assert client.post("/api/decide", json=body, headers={TOKEN_HEADER: "guess"}).status_code == 403
    assert client.post("/api/undo", json={}).status_code == 403
    assert _decide(client, [key], "kept", Origin="https://evil.example").status_code == 403
    assert _decide(client, [key], "kept", **{"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert client.post("/api/decide", data="keys=f1&decision=kept", headers={TOKEN_HEADER: "t0ken"},
                       content_type="application/x-www-form-urlencoded").status_code == 400
    with Catalog.open(rws.catalog_path) as cat:
        assert cat.conn.execute("SELECT COUNT(*) FROM review_log").fetchone()[0] == 0
    ok = _decide(client, [key], "kept", Origin="http://localhost")
    assert ok.status_code == 200 and ok.json["changed"] == [
        {"key": key, "review": {"decision": "kept", "by": "tester", "at": ok.json["changed"][0]["review"]["at"],
                                "reason": None}}]
    undo = client.post("/api/undo", json={}, headers={TOKEN_HEADER: "t0ken"})
    assert undo.json["changed"][0]["review"]["decision"] == "none"
    # a DNS-rebinding page reaches us under its own name: refused before any route runs
    assert client.get("/", headers={"Host": "attacker.example:8377"}).status_code == 403
    assert client.get("/api/facets", headers={"Host": "127.0.0.1:8377"}).status_code == 200
    headers = client.get("/").headers
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"


def _raw_get(base: str, path: str) -> tuple[int, bytes]:
    """GET a path exactly as written (no client-side normalisation of ../ or %2F)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", path)
    res = conn.getresponse()
    return res.status, res.read()


def test_image_routes_serve_only_catalog_files(flask_app, rws: Workspace):
    secret = rws.config_path.read_bytes()
    with Catalog.open(rws.catalog_path) as cat, cat.transaction():  # a tampered row cannot escape either
        cat.conn.execute("UPDATE faces SET crop_path='../../../../etc/passwd' WHERE id=(SELECT MIN(id) FROM faces)")
        bad = cat.conn.execute("SELECT MIN(id) FROM faces").fetchone()[0]
    with serving(flask_app) as base:
        for path in ("/thumb/../facecurate.toml", "/thumb/..%2Ffacecurate.toml", "/thumb/%2E%2E%2Ffacecurate.toml",
                     "/static/../facecurate.toml", "/static/..%2F..%2F..%2Ffacecurate.toml",
                     "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/facecurate.toml", "/crop/..%2F..%2Ffacecurate.db",
                     "/preview/..%2Ffacecurate.toml", "/thumb/f1%00.jpg", "/thumb/raw", "/crop/i1",
                     f"/thumb/f{bad}", f"/crop/f{bad}", "/preview/999999", "/thumb/f999999"):
            status, body = _raw_get(base, path)
            assert status in (400, 404), (path, status)
            assert secret not in body and b"root:" not in body, path
        assert _raw_get(base, "/static/app.js")[0] == 200


def _fake_serve(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """The CLI's call into the server, recorded (the real one blocks until Ctrl-C; it is tested below)."""
    seen: dict[str, object] = {}

    def fake_serve(ws, host, port, fallback, on_ready, *, allow_remote=False, names=()):
        access = server.access_for(host, allow_remote=allow_remote, names=names)  # what running() builds
        seen.update(host=host, port=port, fallback=fallback, remote=access.remote, names=sorted(access.names))
        on_ready(f"http://{host}:{port}/" + (f"?key={access.secret}" if access.secret else ""))

    monkeypatch.setattr(server, "serve", fake_serve)
    return seen


def test_cli_refuses_a_remote_host_without_allow_remote(rws: Workspace, monkeypatch: pytest.MonkeyPatch):
    seen = _fake_serve(monkeypatch)
    for host in ("0.0.0.0", "::", "192.0.2.7", "127.evil.example", "gallery.lan"):
        out = CliRunner().invoke(cli_app, ["review", "--host", host, "--no-browser", "-w", str(rws.root)])
        assert out.exit_code != 0 and not seen, (host, out.output)
        text = " ".join(out.output.split())
        assert f"on {host}, which is not a loopback" in text and "--allow-remote" in text and "127.0.0.1" in text, text
        assert "Traceback" not in out.output and len(out.output.strip().split("\n\n")) == 1  # one paragraph
    config = rws.config_path.read_text()  # review.host from facecurate.toml is held to the same rule
    assert 'host = "127.0.0.1"' in config
    rws.config_path.write_text(config.replace('host = "127.0.0.1"', 'host = "0.0.0.0"'))
    out = CliRunner().invoke(cli_app, ["review", "--no-browser", "-w", str(rws.root)])
    assert out.exit_code != 0 and "--allow-remote" in out.output and not seen


def test_cli_serves_loopback_plainly_and_remote_with_a_key(rws: Workspace, monkeypatch: pytest.MonkeyPatch):
    seen = _fake_serve(monkeypatch)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        out = CliRunner().invoke(cli_app, ["review", "--host", host, "--port", "9999", "--no-browser",
                                           "-w", str(rws.root)])
        assert out.exit_code == 0, out.output
        assert "Warning" not in out.output and "key=" not in out.output and f"http://{host}:9999/" in out.output
        assert seen["remote"] is False and seen["host"] == host
    out = CliRunner().invoke(cli_app, ["review", "--no-browser", "-w", str(rws.root)])
    assert "Warning" not in out.output and (seen["host"], seen["port"], seen["fallback"]) == (
        "127.0.0.1", 8377, True)
    out = CliRunner().invoke(cli_app, ["review", "--host", "0.0.0.0", "--allow-remote", "--allow-host", "Gallery.LAN",
                                       "--port", "9999", "--no-browser", "-w", str(rws.root)])
    assert out.exit_code == 0, out.output
    assert "Warning" in out.output and "0.0.0.0" in out.output and "http://0.0.0.0:9999/?key=" in out.output
    assert seen["remote"] is True and "gallery.lan" in seen["names"]  # type: ignore[operator]
    key = out.output.split("?key=")[1].split()[0]
    assert len(key) >= 24 and out.output.count(key) == 1  # shown once, in the URL


def test_a_taken_port_is_reported_or_replaced(rws: Workspace):
    with server.running(rws, "127.0.0.1", 0) as (first, url):
        taken = first.server_port
        with server.running(rws, "127.0.0.1", taken, fallback=True) as (second, url2):
            assert second.server_port != taken and url2 == f"http://127.0.0.1:{second.server_port}/"
        assert url == f"http://127.0.0.1:{taken}/"
        with pytest.raises(FacecurateError, match="--port"), server.running(rws, "127.0.0.1", taken):
            pass


def test_every_item_state_row_is_an_item_with_its_state(client: FlaskClient, rws: Workspace):
    """Photos whose crop failed or has not run are gallery items too, so the gallery counts what `status` and
    `export` count (the item_state view); they are never decidable, and `review --list` names the failed one."""
    with Catalog.open(rws.catalog_path) as cat, cat.transaction():
        new = {}
        for name, sha in (("failed", "f" * 64), ("pending", "e" * 64)):
            new[name] = cat.add_image(sha256=sha, path=f"raw/{sha[:2]}/{sha}.jpg", format="jpeg", width=8,
                                      height=8, size=8, label="demo")
        cat.save_crop_result(new["failed"], "failed", [], error="corrupt")
    with Catalog.open(rws.catalog_path) as cat:
        states = Counter(s.state.value for s in cat.item_states().values())
        groups = {g.reason: g for g in report.reason_groups(cat)}
    facets = client.get("/api/facets").json
    assert facets["statuses"] == dict(states) == {"reject": 3, "keep": 3, "no_face": 1, "failed": 1, "pending": 1}
    assert facets["total"] == 9 and facets["reasons"]["failed"] == 1
    res = client.get("/api/query", query_string={"status": "failed"}).json
    assert res["keys"] == [f"i{new['failed']}"] and res["total"] == 9
    cells = client.get(f"/api/items?keys=i{new['failed']},i{new['pending']}").json["items"]
    assert [(c["status"], c["reasons"], c["decidable"]) for c in cells] == [
        ("failed", ["failed"], False), ("pending", [], False)]
    detail = client.get(f"/api/item/i{new['failed']}").json
    assert (detail["status"], detail["rule_status"], detail["decidable"]) == ("failed", "failed", False)
    assert _decide(client, [f"i{new['failed']}"], "kept").json["skipped"] == [f"i{new['failed']}"]
    assert groups["failed"].count == 1 and not groups["failed"].decidable and "pending" not in groups


def _raw(base: str, method: str, path: str, headers: dict[str, str] | None = None,
         body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request exactly as written, Host header included (a spoofed one stands for another name or machine)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = dict(headers or {})
    conn.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
    for name, value in {**headers, "Content-Length": str(len(body or b""))}.items():
        conn.putheader(name, value)
    conn.endheaders(body)
    res = conn.getresponse()
    data = res.read()
    conn.close()
    return res.status, {k.lower(): v for k, v in res.getheaders()}, data


def test_remote_gallery_answers_only_the_key_holder_under_known_names(rws: Workspace):
    """Bound to all interfaces with --allow-remote: the key from the printed URL becomes a cookie; without it
    nothing is served (not the page with the write token, not a thumbnail), and a rebinding name is refused."""
    access = server.access_for("0.0.0.0", allow_remote=True, names=["Gallery.LAN"])
    assert access.remote and access.secret and len(access.secret) >= 24
    app = create_app(rws, access=access, token="t0ken")
    key = _key(rws, "biden.jpg")
    with serving(app) as base:
        port = urlsplit(base).port
        lan = {"Host": f"192.0.2.7:{port}"}  # an IP literal cannot be rebound: any is fine on a wildcard bind
        for path in ("/", "/api/facets", "/api/query", f"/api/item/{key}", f"/thumb/{key}", "/static/app.js",
                     "/?key=", "/?key=wrong", f"/?key={access.secret[:-1]}"):
            status, _, data = _raw(base, "GET", path, lan)
            assert status == 403 and b"t0ken" not in data and access.secret.encode() not in data, path
            assert b"printed in its terminal" in data, path
        assert _raw(base, "POST", "/api/decide", {**lan, TOKEN_HEADER: "t0ken", "Content-Type": "application/json"},
                    json.dumps({"keys": [key], "decision": "kept"}).encode())[0] == 403
        # the printed URL: the key becomes an HttpOnly, same-site cookie and leaves the address bar
        status, headers, _ = _raw(base, "GET", f"/?key={access.secret}&x=1", lan)
        assert status == 303 and headers["location"].endswith("/?x=1") and "key" not in headers["location"]
        status, headers2, _ = _raw(base, "GET", f"//evil.example/?key={access.secret}", lan)
        assert status == 303 and headers2["location"] in ("/evil.example/", f"http://192.0.2.7:{port}/evil.example/")
        cookie = headers["set-cookie"]
        assert cookie.startswith(f"fc_key={access.secret};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        jar = {"Cookie": f"fc_key={access.secret}"}
        status, headers, page = _raw(base, "GET", "/", {**lan, **jar})
        assert status == 200 and b'content="t0ken"' in page and access.secret.encode() not in page
        for host in (f"gallery.lan:{port}", f"[fd00::9]:{port}", f"localhost:{port}"):
            assert _raw(base, "GET", "/api/facets", {"Host": host, **jar})[0] == 200, host
        for host in (f"attacker.example:{port}", f"192.0.2.7.nip.io:{port}", ""):  # DNS rebinding, or none
            status, _, data = _raw(base, "GET", "/", {"Host": host, **jar})
            assert status == 403 and b"t0ken" not in data, host
        assert _raw(base, "GET", "/", {**lan, "Cookie": "fc_key=guess"})[0] == 403
        write = {**lan, **jar, "Content-Type": "application/json"}
        body = json.dumps({"keys": [key], "decision": "kept"}).encode()
        assert _raw(base, "POST", "/api/decide", write, body)[0] == 403  # the key is not the write token
        assert _raw(base, "POST", "/api/decide", {**write, TOKEN_HEADER: "t0ken",
                                                  "Origin": "https://evil.example"}, body)[0] == 403
        status, _, data = _raw(base, "POST", "/api/decide", {**write, TOKEN_HEADER: "t0ken"}, body)
        assert status == 200 and json.loads(data)["changed"][0]["review"]["decision"] == "kept"


def test_remote_host_allow_list_is_the_bound_address_and_given_names():
    one = server.access_for("192.0.2.2", allow_remote=True)
    assert one.allows_host("192.0.2.2:8377") and one.allows_host("192.0.2.2")
    for host in ("192.0.2.3:8377", "127.0.0.1:8377", "localhost:8377", "[fd00::2]:8377", "evil.example", None):
        assert not one.allows_host(host), host
    six = server.access_for("fd00::2", allow_remote=True, names=["box.lan"])
    assert six.allows_host("[fd00::2]:8377") and six.allows_host("BOX.lan.:80") and not six.allows_host("other.lan")
    assert one.secret != six.secret  # a fresh key per run
    for host in ("192.0.2.2", "0.0.0.0", "::", "gallery.lan", "127.example.com", "::ffff:192.0.2.2"):
        with pytest.raises(FacecurateError, match="--allow-remote"):
            server.access_for(host)
    for host in ("127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "[::1]", "localhost", "::ffff:127.0.0.1"):
        local = server.access_for(host)
        assert not local.remote and local.secret is None, host
    local = server.access_for("127.0.0.2")  # loopback: loopback names and addresses, never anything else
    for host in ("127.0.0.2:1", "127.0.0.1:1", "localhost:1", "[::1]:1", "app.localhost"):
        assert local.allows_host(host), host
    for host in ("192.0.2.2:1", "attacker.example:1", "127.0.0.1.nip.io", "0.0.0.0"):
        assert not local.allows_host(host), host


def _local_address() -> str | None:
    """A non-loopback address of this machine, or None (then the remote bind is tested on loopback only)."""
    for probe in ("192.0.2.1", "10.255.255.254", "2001:db8::1"):
        family = socket.AF_INET6 if ":" in probe else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((probe, 9))  # UDP connect sends nothing: it only picks the route's source address
                addr = str(s.getsockname()[0])
        except OSError:
            continue
        if not server.is_loopback(addr) and not server._bind_problem(addr, 0):
            return addr
    return None


@contextmanager
def _served(rws: Workspace, host: str, **kwargs: object) -> Iterator[tuple[str, str]]:
    """server.running in a thread: yields (base URL as bound, URL as printed)."""
    with server.running(rws, host, 0, **kwargs) as (srv, url):  # type: ignore[arg-type]
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        shown = f"[{host}]" if ":" in host else host
        try:
            yield f"http://{shown}:{srv.server_port}", url
        finally:
            srv.shutdown()
            thread.join(timeout=10)


def test_remote_bind_on_a_real_interface(rws: Workspace):
    addr = _local_address()
    if addr is None:
        pytest.skip("no non-loopback address on this machine: the policy is tested over loopback above")
    with pytest.raises(FacecurateError, match="--allow-remote"), server.running(rws, addr, 0):
        pass
    with _served(rws, addr, allow_remote=True) as (base, url):
        host = urlsplit(base).netloc
        assert url.startswith(f"{base}/?key=")
        status, _, data = _raw(base, "GET", "/", {"Host": host})
        assert status == 403 and b"fc-token" not in data
        status, headers, _ = _raw(base, "GET", urlsplit(url).path + "?" + urlsplit(url).query, {"Host": host})
        assert status == 303 and headers["location"].endswith("/")
        jar = {"Cookie": headers["set-cookie"].split(";")[0], "Host": host}
        status, _, page = _raw(base, "GET", "/", jar)
        assert status == 200 and b"fc-token" in page
        assert _raw(base, "GET", "/", {**jar, "Host": "attacker.example"})[0] == 403


def test_every_loopback_address_serves_without_a_key(rws: Workspace):
    hosts = ["127.0.0.1", "127.0.0.2", "localhost"]
    if socket.has_ipv6 and not server._bind_problem("::1", 0):
        hosts.append("::1")
    for host in hosts:
        with _served(rws, host) as (base, url):
            assert "key=" not in url and url.startswith(f"http://{'[::1]' if host == '::1' else host}:")
            if host == "localhost":
                base = base.replace("localhost", "127.0.0.1")  # what localhost resolved to: the bind's family
                status, _, page = _raw(base, "GET", "/", {"Host": urlsplit(url).netloc})
            else:
                status, _, page = _raw(base, "GET", "/")
            assert status == 200 and b"fc-token" in page, host  # 127.0.0.2 used to answer 403 to everything


def test_hostile_ids_and_bodies_answer_4xx_on_every_route(flask_app, rws: Workspace):
    big, huge = "9" * 20, "9" * 5000
    gets = [f"/preview/{big}", f"/preview/1{big}", "/preview/-1", "/preview/0", "/preview/1e3", f"/preview/{huge}",
            f"/thumb/f{big}", f"/thumb/i{big}", f"/crop/f{big}", f"/crop/i{big}", f"/api/item/f{big}",
            f"/api/item/i{huge}", f"/api/item/{'x' * 20000}", "/static/" + "a/" * 2000, f"/thumb/f{'0' * 30}1"]
    ok = [f"/api/items?keys=f{big},i{big},{',' * 50000}", f"/api/query?first={big}", f"/api/query?first=-{huge}",
          f"/api/query?first={huge}", "/api/query?first=1e999", f"/api/query?sort=score:{'a' * 5000}",
          "/api/query?sort=score:nonexistent", "/api/query?" + "&".join(f"x{i}=1" for i in range(2000))]
    with serving(flask_app) as base:
        for path in gets:
            status, _, _ = _raw(base, "GET", path)
            assert 400 <= status < 500, (path[:60], status)
        for path in ok:
            status, _, data = _raw(base, "GET", path)
            assert status in (200, 400), (path[:60], status, data[:200])
        write = {TOKEN_HEADER: "t0ken", "Content-Type": "application/json"}
        deep = b"[" * 100_000 + b"]" * 100_000
        bodies = [deep, b'{"keys": ' + deep + b', "decision": "kept"}', b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
                  b"\xff\xfe{", b"[]", b"null", b"1" * 5000, b'{"keys": "f1", "decision": "kept"}',
                  json.dumps({"keys": [[[["f1"]]]], "decision": "kept"}).encode(),
                  json.dumps({"keys": ["f1"], "decision": {"a": [1] * 10}}).encode()]
        for route in ("/api/decide", "/api/undo"):
            for body in bodies:
                status, _, data = _raw(base, "POST", route, write, body)
                assert status == 400 or (route == "/api/undo" and status == 200 and body[:1] == b"{"), (
                    route, body[:40], status, data[:200])
        status, _, data = _raw(base, "POST", "/api/decide", write,
                               json.dumps({"keys": [f"f{big}", "i1", "f" + huge], "decision": "kept"}).encode())
        assert status == 200 and json.loads(data)["skipped"] == [f"f{big}", "i1", "f" + huge]
        status, _, data = _raw(base, "POST", "/api/decide", write, b" " * (server.MAX_BODY + 1))
        assert status == 413 and b"error" in data
        for method in ("PUT", "DELETE", "PATCH"):
            assert 400 <= _raw(base, method, "/api/decide", write, b"{}")[0] < 500, method
        assert _raw(base, "OPTIONS", "/api/decide", write, b"{}")[0] == 200  # Flask's Allow answer: no write
        assert _raw(base, "GET", "/api/facets")[0] == 200  # still serving after all of it
    with Catalog.open(rws.catalog_path) as cat:  # and nothing hostile was recorded
        assert cat.conn.execute("SELECT COUNT(*) FROM review_log").fetchone()[0] == 0
