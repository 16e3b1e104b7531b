"""The review gallery: a small Flask app over one workspace's catalog.

Security, because the gallery shows crawled strings and writes decisions:

- it binds 127.0.0.1 unless told otherwise, and on loopback answers only requests whose Host is a loopback
  name (a DNS-rebinding page cannot read the token from the index page);
- every write needs the per-run token from the index page in ``X-Facecurate-Token`` and JSON, and is refused
  when the browser says it comes from another site (Origin, Sec-Fetch-Site): no cross-site writes;
- the page is plain JS that writes crawled strings with ``textContent``; the index template is autoescaped and
  a Content-Security-Policy allows no inline script, no framing (no clickjacking keypresses);
- image routes take item keys (``f12``, ``i3``) or image ids, never paths: files come from catalog rows.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, g, jsonify, render_template, request, send_file
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from facecurate.catalog import Catalog
from facecurate.errors import FacecurateError, ImageError
from facecurate.review import decisions, detail, items, scoring, thumbs
from facecurate.workspace import Workspace

STATIC = Path(__file__).parent / "static"
TOKEN_HEADER = "X-Facecurate-Token"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
MAX_DECIDE = 200_000
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def create_app(ws: Workspace, *, public: bool = False, token: str | None = None) -> Flask:
    """The gallery app for one workspace; ``public`` (a non-loopback --host) drops the Host check only."""
    cfg = ws.config()
    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static", template_folder=str(STATIC))
    app.config.update(FC_TOKEN=token or secrets.token_urlsafe(32), FC_SESSION=secrets.token_hex(6),
                      FC_REVIEWER=decisions.reviewer_name(cfg), JSON_SORT_KEYS=False)
    thumb_side = int(cfg.get("review", "thumb_size"))
    limits = (int(cfg.get("media", "max_pixels")), int(cfg.get("media", "max_bytes")))

    def catalog() -> Catalog:
        """One connection per request, closed when the request ends."""
        if "catalog" not in g:
            g.catalog = Catalog.open(ws.catalog_path)
        opened: Catalog = g.catalog  # flask.g is untyped
        return opened

    @app.teardown_appcontext
    def _close(_exc: BaseException | None) -> None:
        cat = g.pop("catalog", None)
        if cat is not None:
            cat.close()

    @app.before_request
    def _guard() -> None:
        if not public and _hostname(request.host) not in LOOPBACK_NAMES:
            abort(403, "this gallery answers only on a loopback address")
        if request.method not in ("GET", "HEAD"):
            _check_write()

    def _check_write() -> None:
        sent = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(sent.encode(), app.config["FC_TOKEN"].encode()):
            abort(403, "missing or wrong session token: reload the gallery page")
        origin = request.headers.get("Origin")
        if origin is not None and origin.rstrip("/") != request.host_url.rstrip("/"):
            abort(403, "cross-site write refused")
        if request.headers.get("Sec-Fetch-Site", "same-origin") != "same-origin":
            abort(403, "cross-site write refused")
        if not request.is_json or not isinstance(request.get_json(silent=True), dict):
            abort(400, "send a JSON object")

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        if request.path.startswith("/api/") or request.path == "/":
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(400)
    @app.errorhandler(403)
    @app.errorhandler(404)
    @app.errorhandler(405)
    def _error(exc: Any) -> tuple[Response, int]:
        return jsonify(error=getattr(exc, "description", str(exc))), int(getattr(exc, "code", 500) or 500)

    @app.get("/")
    def index() -> str:
        return render_template("index.html", token=app.config["FC_TOKEN"], reviewer=app.config["FC_REVIEWER"],
                               workspace=str(ws.root))

    @app.get("/api/facets")
    def api_facets() -> Response:
        out = items.facets(catalog())
        infos = scoring.score_infos(catalog(), ws.config())
        out["scores"] = [s.as_dict() for s in infos]
        out["reason_scores"] = scoring.reason_scores(infos)
        out["reviewer"] = app.config["FC_REVIEWER"]
        return jsonify(out)

    @app.get("/api/query")
    def api_query() -> Response:
        args = request.args.to_dict()
        try:
            sort = args.get("sort", "")
            worse: dict[str, str] = ({sort[6:]: scoring.score_info(catalog(), ws.config(), sort[6:]).worse}
                                     if sort.startswith("score:") and scoring.NAME_RE.match(sort[6:]) else {})
            flt = items.parse_filter(args, worse)
        except ValueError as exc:
            abort(400, str(exc))
        found = catalog().gallery_keys(flt)
        first = min(max(request.args.get("first", 0, type=int), 0), 500)  # the page in view: saves a round trip
        return jsonify(count=len(found.keys), total=found.total, keys=found.keys,
                       items=items.summaries(catalog(), found.keys[:first]) if first else [])

    @app.get("/api/items")
    def api_items() -> Response:
        keys = [k for k in request.args.get("keys", "").split(",") if k][:1000]
        return jsonify(items=items.summaries(catalog(), keys))

    @app.get("/api/item/<key>")
    def api_item(key: str) -> Response:
        parsed = items.ItemKey.parse(key)
        now = ws.config()  # thresholds as facecurate.toml says now: edited while the gallery runs, still right
        found = detail.item_detail(catalog(), parsed, lambda name: scoring.score_info(catalog(), now, name)) \
            if parsed else None
        if found is None:
            abort(404, "no such item in the catalog")
        return jsonify(found)

    @app.post("/api/decide")
    def api_decide() -> Response:
        body = request.get_json()
        keys, decision = body.get("keys"), body.get("decision")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(keys) > MAX_DECIDE:
            abort(400, "keys must be a list of item keys")
        if decision not in decisions.DECISIONS:
            abort(400, f"decision must be one of {', '.join(d.value for d in decisions.DECISIONS)}")
        targets, skipped = items.resolve_targets(catalog(), keys)
        batch, changes = decisions.decide(catalog(), targets, decision, app.config["FC_REVIEWER"],
                                          app.config["FC_SESSION"])
        by_pair = {(t.image_id, t.face_index): t.key for t in targets}
        return jsonify(batch=batch, changed=_changed(catalog(), changes, by_pair), skipped=skipped)

    @app.post("/api/undo")
    def api_undo() -> Response:
        batch, changes = decisions.undo(catalog(), app.config["FC_REVIEWER"], app.config["FC_SESSION"])
        keys = items.keys_for(catalog(), [(c.image_id, c.face_index) for c in changes])
        return jsonify(undone=batch, changed=_changed(catalog(), changes, keys))

    @app.get("/thumb/<key>")
    def thumb(key: str) -> Response:
        relative, kind = _file_of(catalog(), key)
        return _send_cached(relative, kind, thumb_side)

    @app.get("/crop/<key>")
    def crop(key: str) -> Response:
        relative, kind = _file_of(catalog(), key)
        if kind != "crop":
            abort(404, "this item has no crop")
        path = thumbs.inside(ws.root, relative)
        if path is None or not path.is_file():
            abort(404, "the crop file is missing")
        return send_file(path, conditional=True, max_age=60)

    @app.get("/preview/<int:image_id>")
    def preview(image_id: int) -> Response:
        path = catalog().image_path(image_id)
        if path is None:
            abort(404, "no such image in the catalog")
        return _send_cached(path, "photo", thumbs.PREVIEW_SIDE)

    def _send_cached(relative: str, kind: str, side: int) -> Response:
        try:
            path = thumbs.cached(ws, relative, kind, side, *limits)
        except ImageError as exc:
            abort(404, str(exc))
        return send_file(path, mimetype="image/jpeg", conditional=True, max_age=60)

    return app


def _hostname(host: str | None) -> str:
    """The name part of a Host header: ``127.0.0.1:8377`` → ``127.0.0.1``, ``[::1]:8377`` → ``[::1]``."""
    host = (host or "").lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _file_of(catalog: Catalog, text: str) -> tuple[str, str]:
    """(relative path, crop | photo) of an item key, from the catalog; 404 for anything else."""
    key = items.ItemKey.parse(text)
    if key is not None and key.kind == "f":
        crop = catalog.face_crop_path(key.id)
        if crop is not None:
            return crop, "crop"
    elif key is not None:
        path = catalog.image_path(key.id)
        if path is not None:
            return path, "photo"
    abort(404, "no such item in the catalog")


def _changed(catalog: Catalog, changes: list[decisions.Change],
             keys: dict[tuple[int, int], str]) -> list[dict[str, Any]]:
    """The review field each changed item has now, by key, for the page to redraw."""
    pairs = [(c.image_id, c.face_index) for c in changes]
    latest = catalog.review_latest(pairs)
    return [{"key": keys[p], "review": latest.get(p, dict(items.NO_REVIEW))} for p in pairs if p in keys]


# -- running it ------------------------------------------------------------------------------------------


class KeepAliveHandler(WSGIRequestHandler):
    """HTTP/1.1: the browser reuses its six connections for the dozens of thumbnails in view instead of
    opening a new one per image (werkzeug's default is HTTP/1.0, one connection per request)."""

    protocol_version = "HTTP/1.1"


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def _bind_problem(host: str, port: int) -> str | None:
    """Why (host, port) cannot be bound, probed the way the server binds (werkzeug exits instead of raising)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


@contextmanager
def running(ws: Workspace, host: str, port: int, fallback: bool = False) -> Iterator[tuple[BaseWSGIServer, str]]:
    """Bind the gallery (a free port when ``port`` is taken and ``fallback``); yields (server, URL)."""
    app = create_app(ws, public=not is_loopback(host))
    problem = _bind_problem(host, port) if port else None
    if problem and fallback:
        port, problem = 0, None
    if problem:
        raise FacecurateError(f"Cannot listen on {host}:{port} ({problem}). Pick another port with --port, "
                              f"or --port 0 for any free one.")
    try:
        server = make_server(host, port, app, threaded=True, request_handler=KeepAliveHandler)
    except SystemExit as exc:  # werkzeug exits on bind errors (a race with the probe above)
        raise FacecurateError(f"Cannot listen on {host}:{port}. Pick another port with --port.") from exc
    shown = f"[{host}]" if ":" in host else host
    try:
        yield server, f"http://{shown}:{server.server_port}/"
    finally:
        server.server_close()


def serve(ws: Workspace, host: str, port: int, fallback: bool, on_ready: Callable[[str], None]) -> None:
    """Serve until Ctrl-C; ``on_ready`` gets the URL once the socket is bound (to print it, open a browser)."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # errors only: a line per thumbnail is noise
    with running(ws, host, port, fallback) as (server, url):
        on_ready(url)
        server.serve_forever()
