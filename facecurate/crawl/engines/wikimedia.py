"""Wikimedia Commons through the official API: licensed images with their authors.

The best engine for a publishable dataset: every result carries ``LicenseShortName`` and ``Artist`` (HTML,
stripped here). Wikimedia asks for a descriptive User-Agent with a contact, so this engine sends facecurate's
own agent, never a browser one. ``continue.gsroffset`` is the next page; its absence ends the query.

Wikimedia's robot policy (2025) enforces that agent (403 "Please set a user-agent and respect our robot
policy"), so a crawl with Wikimedia refuses to start without ``[crawl] contact``; it allows 2 connections to
upload.wikimedia.org (the crawl caps the download hosts, see ``download_limits``); and it prefers thumbnails to
originals: results point at ``thumburl`` of ``[engines.wikimedia] thumb_width`` px (2048 by default, plenty for
a 1024 crop; Commons answers the original when it is smaller).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from facecurate.crawl.engines.base import (
    MAX_URL,
    Engine,
    EngineContext,
    LayoutError,
    Page,
    Result,
    as_int,
    as_text,
    load_json,
    looks_blocked,
    strip_tags,
)

PAGE_SIZE = 50


def _meta(ext: dict[str, Any], key: str) -> str | None:
    value = ext.get(key, {}).get("value") if isinstance(ext.get(key), dict) else None
    return strip_tags(str(value)) if value not in (None, "") else None


def parse_results(text: str, thumbs: bool = False) -> tuple[list[Result], int | None]:
    """Results of one API answer, by ``index`` (rank), and the next ``gsroffset`` (None at the end). Pure.

    With ``thumbs`` a result's URL is the ``thumburl`` the API computed (``iiurlwidth``), when it gave one.
    Raises LayoutError for non-JSON, and for an API ``error`` object (with its info)."""
    data = load_json(text, "the API")
    if not isinstance(data, dict):
        raise LayoutError("the API answer is not a JSON object")
    if "error" in data:
        err = data["error"] if isinstance(data["error"], dict) else {}
        raise LayoutError(f"API error {err.get('code', '?')}: {err.get('info', data['error'])}")
    query = data.get("query")
    pages = query.get("pages") if isinstance(query, dict) else None
    items = pages.values() if isinstance(pages, dict) else pages if isinstance(pages, list) else []
    out: list[tuple[int, Result]] = []
    for page in items:  # each level checked: an answer of the wrong shape yields no result, not a crash
        infos = page.get("imageinfo") if isinstance(page, dict) else None
        info = infos[0] if isinstance(infos, list) and infos else None
        if not isinstance(info, dict):
            continue
        url = info.get("url")
        if not isinstance(url, str) or not url or not str(info.get("mime", "image/")).startswith("image/"):
            continue
        ext = info.get("extmetadata")
        ext = ext if isinstance(ext, dict) else {}
        title = _meta(ext, "ObjectName") or (as_text(page.get("title"), None) or "").removeprefix("File:") or None
        thumb = as_text(info.get("thumburl"), MAX_URL, cut=False) if thumbs else None
        out.append((as_int(page.get("index")) or 10**9, Result(
            url=thumb or url, page_url=info.get("descriptionurl"), title=title, width=as_int(info.get("width")),
            height=as_int(info.get("height")), license=_meta(ext, "LicenseShortName") or _meta(ext, "UsageTerms"),
            author=_meta(ext, "Artist") or as_text(info.get("user"), None),
            thumbnail=info.get("thumburl"))))
    out.sort(key=lambda pair: pair[0])
    cont = data.get("continue")
    nxt = cont.get("gsroffset") if isinstance(cont, dict) else None
    return [r for _, r in out], as_int(nxt)


def search_text(term: str, category: str = "") -> str:
    """The CirrusSearch text: bitmaps only, within a category when one is set. Pure."""
    cat = category.strip().removeprefix("Category:").strip()
    return f"filetype:bitmap {term}" + (f' incategory:"{cat}"' if cat else "")


def download_limits(options: dict[str, Any]) -> dict[str, tuple[int, float]]:
    """Host -> (connections, requests per second) for the hosts Commons serves files from. Pure."""
    hosts = [h.strip().lower() for h in str(options.get("download_hosts", "")).split(",") if h.strip()]
    return {h: (int(options.get("per_host", 2)), float(options.get("per_host_rate", 4.0))) for h in hosts}


class Wikimedia(Engine):
    name = "wikimedia"

    def __init__(self, ctx: EngineContext) -> None:
        super().__init__(ctx)
        self.thumb_width = int(ctx.options.get("thumb_width", 0) or 0)

    def page_url(self, term: str, offset: int) -> str:
        query = {"action": "query", "format": "json", "generator": "search", "gsrnamespace": 6,
                 "gsrsearch": search_text(term, str(self.ctx.options.get("category", ""))), "gsrlimit": PAGE_SIZE,
                 "gsroffset": offset, "prop": "imageinfo", "iiprop": "url|size|mime|extmetadata|user",
                 "iiurlwidth": self.thumb_width or 320}
        return f"{self.base_url}/w/api.php?{urlencode(query)}"

    def search(self, term: str, cursor: dict[str, Any]) -> Page:
        offset = int(cursor.get("offset", 0))
        url = self.page_url(term, offset)
        text = self.fetch_page(url, accept="application/json", user_agent=self.ctx.identifiable_user_agent).text()
        try:
            results, nxt = parse_results(text, thumbs=self.thumb_width > 0)
        except LayoutError as exc:
            kind = "api_error" if "API error" in str(exc) else looks_blocked(text) or "layout_changed"
            raise self.stopped(kind, str(exc), url, text) from None
        return Page(results, {"offset": nxt if nxt is not None else offset + len(results)}, end=nxt is None)
