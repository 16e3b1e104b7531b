"""The review gallery: a small Flask app over one workspace's catalog.

Security, because the gallery shows crawled strings and writes decisions:

- it binds 127.0.0.1 unless told otherwise, and answers only requests whose Host is on an allow-list (on
  loopback: loopback names and addresses), so a DNS-rebinding page cannot read the token from the index page;
- any other address needs ``allow_remote`` (``--allow-remote``): the gallery then answers only clients that
  show a secret key, printed once in the terminal as part of the URL and exchanged for an HttpOnly cookie, and
  only Host names that are the bound address or given (``--allow-host``); nothing is served before the key;
- client input never reaches an unchecked conversion: ids are matched by a bounded pattern (no 20-digit
  integer reaches SQLite), bodies are capped and parsed with their nesting depth caught, so hostile input is
  a 4xx, never a 500;
- every write needs the per-run token from the index page in ``X-Facecurate-Token`` and JSON, and is refused
  when the browser says it comes from another site (Origin, Sec-Fetch-Site): no cross-site writes;
- the page is plain JS that writes crawled strings with ``textContent``; the index template is autoescaped and
  a Content-Security-Policy allows no inline script, no framing (no clickjacking keypresses);
- image routes take item keys (``f12``, ``i3``) or image ids, never paths: files come from catalog rows.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
import secrets
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, abort, g, jsonify, redirect, render_template, request, send_file
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Response as BaseResponse

from facecurate.catalog import Catalog
from facecurate.errors import FacecurateError, ImageError
from facecurate.filestore import local_file
from facecurate.review import calibration, decisions, detail, items, scoring, thumbs
from facecurate.workspace import Workspace

STATIC = Path(__file__).parent / "static"
TOKEN_HEADER = "X-Facecurate-Token"
KEY_PARAM = "key"  # the secret in the printed URL (remote only)
KEY_COOKIE = "fc_key"  # ... and in the cookie it is exchanged for
LOOPBACK_NAMES = frozenset({"localhost"})
WILDCARDS = frozenset({"0.0.0.0", "::", ""})
MAX_DECIDE = 200_000
CALIBRATE_FIRST = 500  # faces the "most informative first" order ranks; the rest follow in catalog order
MAX_BODY = 16 * 1024 * 1024  # 200,000 keys of 20 bytes and their quotes: a bigger body is no decision
IMAGE_ID = re.compile(r"[1-9][0-9]{0,17}")  # 18 digits: every id SQLite can hold fits, no OverflowError
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _bare(host: str) -> str:
    """A host as the allow-list compares it: lower case, no IPv6 brackets, no trailing dot."""
    return host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(_bare(host).split("%", 1)[0])
    except ValueError:
        return None
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return mapped or ip


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (also IPv4-mapped) and localhost names: only this machine can connect there.
    A name that merely starts with "127." is not one."""
    bare = _bare(host)
    ip = _ip(bare)
    if ip is not None:
        return ip.is_loopback
    return bare == "localhost" or bare.endswith(".localhost")


@dataclass(frozen=True)
class Access:
    """Who the gallery answers: the Host names it accepts and, off loopback, the key a client must show.

    The Host check stops DNS rebinding (a page under the attacker's name, resolved to this machine); the key
    stops everyone on the network who did not see the terminal. An IP-literal Host cannot be rebound, so a
    wildcard bind accepts any (the machine's addresses are whatever the client dialled)."""

    host: str
    remote: bool = False
    names: frozenset[str] = frozenset()
    any_ip: bool = False
    secret: str | None = field(default=None, repr=False)

    def allows_host(self, header: str | None) -> bool:
        name = _bare(_hostname(header))
        if not name:
            return False
        if name in self.names:
            return True
        ip = _ip(name)
        if not self.remote:
            return name in LOOPBACK_NAMES or name.endswith(".localhost") or (ip is not None and ip.is_loopback)
        return self.any_ip and ip is not None


LOCAL = Access("127.0.0.1")


def access_for(host: str, *, allow_remote: bool = False, names: Iterable[str] = (),
               secret: str | None = None) -> Access:
    """The access rules for a bind address; a non-loopback one without ``allow_remote`` is refused here, so the
    Python API is held to the same rule as the CLI."""
    if is_loopback(host):
        return Access(host, names=frozenset({_bare(host), *(_bare(n) for n in names)}))
    if not allow_remote:
        hosts = "of this machine's addresses, its name" if _bare(host) in WILDCARDS else host
        raise FacecurateError(
            f"Refusing to serve the review gallery on {host}, which is not a loopback address: other machines "
            f"could see the photos and their provenance. To serve it to your network, add --allow-remote (the "
            f"gallery then answers only clients holding a secret key, printed here once as part of its URL, and "
            f"only the Host names {hosts} and those given with --allow-host NAME); to keep it on this "
            f"machine, drop --host (or set review.host back to 127.0.0.1 in facecurate.toml).")
    wildcard = _bare(host) in WILDCARDS
    allowed = {_bare(n) for n in names if _bare(n)}
    if wildcard:
        allowed |= {"localhost", _bare(socket.gethostname())}
    else:
        allowed.add(_bare(host))
    return Access(host, remote=True, names=frozenset(allowed), any_ip=wildcard,
                  secret=secret or secrets.token_urlsafe(24))


def create_app(ws: Workspace, *, access: Access = LOCAL, token: str | None = None) -> Flask:
    """The gallery app for one workspace, answering as ``access`` says (loopback Host names by default)."""
    cfg = ws.config()
    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static", template_folder=str(STATIC))
    app.config.update(FC_TOKEN=token or secrets.token_urlsafe(32), FC_SESSION=secrets.token_hex(6),
                      FC_REVIEWER=decisions.reviewer_name(cfg), JSON_SORT_KEYS=False, MAX_CONTENT_LENGTH=MAX_BODY)
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
    def _guard() -> BaseResponse | None:
        if not access.allows_host(request.headers.get("Host")):
            abort(403, "this gallery does not answer to that Host name" + (
                " (only loopback ones)" if not access.remote else
                ": restart it with --allow-host NAME for each name you open it by"))
        if access.secret is not None:
            shown = request.args.get(KEY_PARAM)
            if shown is not None and request.method in ("GET", "HEAD"):
                if not _same(shown, access.secret):
                    abort(403, "wrong key: open the URL `facecurate review` printed in its terminal")
                return _exchange(access.secret)
            if not _same(request.cookies.get(KEY_COOKIE, ""), access.secret):
                abort(403, "this gallery needs its key: open the URL `facecurate review` printed in its terminal")
        if request.method not in ("GET", "HEAD"):
            _check_write()
        return None

    def _exchange(secret: str) -> BaseResponse:
        """The key from the URL becomes a cookie, and the address bar loses it (no key in later links)."""
        rest = [(k, v) for k, v in request.args.items(multi=True) if k != KEY_PARAM]
        path = "/" + request.path.lstrip("/")  # never "//host/...": a redirect stays on this server
        resp = redirect(path + (f"?{urlencode(rest)}" if rest else ""), code=303)
        resp.set_cookie(KEY_COOKIE, secret, httponly=True, samesite="Strict", path="/")
        return resp

    def _check_write() -> None:
        sent = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(sent.encode(), app.config["FC_TOKEN"].encode()):
            abort(403, "missing or wrong session token: reload the gallery page")
        origin = request.headers.get("Origin")
        if origin is not None and origin.rstrip("/") != request.host_url.rstrip("/"):
            abort(403, "cross-site write refused")
        if request.headers.get("Sec-Fetch-Site", "same-origin") != "same-origin":
            abort(403, "cross-site write refused")
        if not request.is_json:
            abort(400, "send a JSON object")
        g.body = _json_object(request.get_data(cache=True))

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
    @app.errorhandler(413)
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
        out["calibration"] = [r.as_dict() for r in calibration.catalog_progress(catalog(), ws.config())]
        out["hotkeys"] = calibration.HOTKEYS
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
        keys = found.keys
        if args.get("sort") == items.CALIBRATE_SORT:  # most informative first, then the rest in catalog order
            asked = [q.key for q in calibration.catalog_queue(catalog(), ws.config(), CALIBRATE_FIRST, set(keys))]
            keys = asked + [k for k in keys if k not in set(asked)]
        first = min(max(request.args.get("first", 0, type=int), 0), 500)  # the page in view: saves a round trip
        return jsonify(count=len(keys), total=found.total, keys=keys,
                       items=items.summaries(catalog(), keys[:first]) if first else [])

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
        body: dict[str, Any] = g.body  # parsed and checked by the write guard
        keys, decision, reason = body.get("keys"), body.get("decision"), body.get("reason")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(keys) > MAX_DECIDE:
            abort(400, "keys must be a list of item keys")
        if decision not in decisions.DECISIONS:
            abort(400, f"decision must be one of {', '.join(d.value for d in decisions.DECISIONS)}")
        if reason is not None and not isinstance(reason, str):
            abort(400, "reason must be a string")
        try:
            calibration.check_reason(decision, reason)
        except ValueError as exc:
            abort(400, str(exc))
        targets, skipped = items.resolve_targets(catalog(), keys)
        batch, changes = decisions.decide(catalog(), targets, decision, app.config["FC_REVIEWER"],
                                          app.config["FC_SESSION"], reason=reason)
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
        if path is not None and not path.is_file():  # in [run] storage only: fetched into the workspace's mirror
            local_file(ws, relative, int(ws.config().get("media", "max_bytes")))
        if path is None or not path.is_file():
            abort(404, "the crop file is missing")
        return send_file(path, conditional=True, max_age=60)

    @app.get("/preview/<image_id>")
    def preview(image_id: str) -> Response:
        if not IMAGE_ID.fullmatch(image_id):
            abort(404, "no such image in the catalog")
        path = catalog().image_path(int(image_id))
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


def _same(shown: str, secret: str) -> bool:
    return hmac.compare_digest(shown.encode("utf-8", "replace"), secret.encode())


def _json_object(data: bytes) -> dict[str, Any]:
    """A write's body as a JSON object; anything else, however malformed or deep, is a 400."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the interpreter's stack
        abort(400, "send a JSON object (this body is not JSON, or is nested too deep)")
    if not isinstance(body, dict):
        abort(400, "send a JSON object")
    return body


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
    reasons = catalog.review_reasons(p for p in pairs if p in latest)
    for pair, review in latest.items():
        review["reason"] = reasons.get(pair) if review["decision"] != "none" else None
    return [{"key": keys[p], "review": latest.get(p, dict(items.NO_REVIEW))} for p in pairs if p in keys]


# -- running it ------------------------------------------------------------------------------------------


class KeepAliveHandler(WSGIRequestHandler):
    """HTTP/1.1: the browser reuses its six connections for the dozens of thumbnails in view instead of
    opening a new one per image (werkzeug's default is HTTP/1.0, one connection per request)."""

    protocol_version = "HTTP/1.1"


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
def running(ws: Workspace, host: str, port: int, fallback: bool = False, *, allow_remote: bool = False,
            names: Iterable[str] = ()) -> Iterator[tuple[BaseWSGIServer, str]]:
    """Bind the gallery (a free port when ``port`` is taken and ``fallback``); yields (server, URL). Off
    loopback the URL carries the key: it is the one place the key is ever shown."""
    names = tuple(n for n in names if _bare(n))
    access = access_for(host, allow_remote=allow_remote, names=names)
    app = create_app(ws, access=access)
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
    name = host  # the name the URL shows: one the Host check accepts, and not 0.0.0.0 (no one can dial it)
    if access.remote and _bare(host) in WILDCARDS:
        name = names[0] if names else socket.gethostname()
    shown = f"[{_bare(name)}]" if ":" in name else name
    key = f"?{KEY_PARAM}={access.secret}" if access.secret else ""
    try:
        yield server, f"http://{shown}:{server.server_port}/{key}"
    finally:
        server.server_close()


def serve(ws: Workspace, host: str, port: int, fallback: bool, on_ready: Callable[[str], None], *,
          allow_remote: bool = False, names: Iterable[str] = ()) -> None:
    """Serve until Ctrl-C; ``on_ready`` gets the URL once the socket is bound (to print it, open a browser)."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # errors only: a line per thumbnail is noise
    with running(ws, host, port, fallback, allow_remote=allow_remote, names=names) as (server, url):
        on_ready(url)
        server.serve_forever()
