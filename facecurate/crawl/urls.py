"""URL normalisation: the key that makes one image URL one fetch, across queries and engines.

Engines hand back the same picture under cosmetic variants (``HTTP://Host:80/a.jpg#x``, ``%7e`` vs ``~``,
shuffled tracking parameters). Normalising them before the frontier lookup is what keeps a re-crawl or a
second engine from downloading and counting the same file again.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
_TRACKING = re.compile(r"^(utm_[a-z]+|fbclid|gclid|mc_cid|mc_eid)$", re.IGNORECASE)
# RFC 3986 unreserved characters need no escaping; everything else keeps (upper-case) escapes.
_SAFE_PATH = "/:@!$&'()*+,;=-._~%"
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_SCHEME = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.-]*):")


def _canonical_path(path: str) -> str:
    """Decode escapes of unreserved characters only (``%7e`` -> ``~``; ``%2F`` stays), upper-case the rest,
    and escape raw spaces and non-ASCII characters."""
    def fix(m: re.Match[str]) -> str:
        ch = chr(int(m.group(1), 16))
        return ch if ch in _UNRESERVED else f"%{m.group(1).upper()}"

    return quote(_ESCAPE.sub(fix, path), safe=_SAFE_PATH)


def absolute(url: str, base_scheme: str = "https") -> str:
    """Protocol-relative ``//host/x`` (common in result pages) becomes ``https://host/x``."""
    url = url.strip()
    return f"{base_scheme}:{url}" if url.startswith("//") else url


def is_fetchable(url: str) -> bool:
    """Only http(s) URLs with a host (and a valid port) are downloads; data: URIs and javascript: links are
    not. An engine's odd result is recorded as failed (see :func:`unfetchable_reason`), never a crash."""
    return unfetchable_reason(url) is None


def unfetchable_reason(url: str) -> str | None:
    """``bad_scheme`` for a non-http(s) URL (``file:``, ``javascript:``, ``data:``…), ``bad_url`` for an
    http(s) one without a usable host or port, None for a URL worth fetching."""
    try:
        normalise(url)
    except ValueError:
        scheme = _SCHEME.match(url)
        return "bad_scheme" if scheme and scheme.group(1).lower() not in ("http", "https") else "bad_url"
    return None


MAX_KEPT = 300


def frontier_key(url: str) -> tuple[str, str]:
    """(key, URL as recorded) of a search result. A fetchable URL is keyed by :func:`normalise`; any other is
    kept as given, so it is recorded and counted once, but a long one (a ``data:`` URI can be megabytes) is
    cut, with a hash of the whole so two different ones stay two."""
    try:
        return normalise(url), url  # normalised once: it is most of the cost of recording a result
    except ValueError:
        pass
    text = url.strip()
    if len(text) > MAX_KEPT:
        text = f"{text[:200]}…(sha256 {hashlib.sha256(text.encode('utf-8', 'replace')).hexdigest()[:16]})"
    return text, text


# A URL already in canonical form, as most image URLs are: lower-case http(s) scheme and host (no user, no
# trailing dot, no default port), a path of characters the canonical form leaves as they are (no escapes, no
# spaces or non-ASCII), no query, no fragment. It is its own normal form (with "/" for an empty path), so the crawl's
# three look-ups per result (record, policy check, request) skip the parse, ~25 us each.
_CANONICAL = re.compile(r"(https?)://[a-z0-9-]+(?:\.[a-z0-9-]+)*(?::([1-9][0-9]{0,4}))?"
                        r"(/[A-Za-z0-9/:@!$&'()*+,;=._~-]*)?")


def normalise(url: str) -> str:
    """A canonical form of ``url``: lower-case scheme and host, no default port, no fragment, canonical
    percent-escapes, sorted query without tracking parameters. Pure; raises ValueError on a non-URL."""
    plain = _CANONICAL.fullmatch(url)
    if plain is not None:
        port = plain.group(2)
        if port is None or _DEFAULT_PORTS[plain.group(1)] != int(port) < 65536:  # else the parse drops or refuses it
            return url if plain.group(3) else url + "/"
    parts = urlsplit(absolute(url))
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    host = parts.hostname.lower().rstrip(".")
    if not host.isascii():  # an ASCII host is its own IDNA form; the codec costs a tenth of this function
        with contextlib.suppress(UnicodeError):
            host = host.encode("idna").decode("ascii")
    port = parts.port
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = _canonical_path(parts.path) or "/"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _TRACKING.match(k)]
    return urlunsplit((scheme, netloc, path, urlencode(sorted(query), doseq=True), ""))


def host_key(url: str) -> str:
    """What the politeness limits count per: host and port (two loopback servers are two hosts). A URL that
    does not parse (``http://[::1/x``, an engine's junk) is no host's: it fails as ``bad_url`` unrequested."""
    try:
        return (urlsplit(url).netloc or "").lower()
    except ValueError:
        return ""
