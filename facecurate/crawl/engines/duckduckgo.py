"""DuckDuckGo images: a ``vqd`` token from the HTML page, then JSON pages from ``i.js``.

The token is tied to the query and the User-Agent, so one agent is kept for a whole query and the token is
carried in the cursor (a resumed run reuses it, and fetches a fresh one if the engine rejects it). ``next`` is
a relative URL for the following page; its absence ends the query.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from facecurate.crawl.engines.base import (
    Engine,
    LayoutError,
    Page,
    Result,
    SearchStopped,
    as_int,
    looks_blocked,
    strip_tags,
)

_VQD = re.compile(r"""vqd\s*=\s*["']?([\d-]+)["']?|vqd=([\d-]+)&""")


def parse_vqd(text: str) -> str | None:
    """The token in any of the forms seen: ``vqd="…"``, ``vqd='…'``, ``vqd=…&``. Pure."""
    m = _VQD.search(text)
    return (m.group(1) or m.group(2)) if m else None


def parse_results(text: str) -> tuple[list[Result], str | None]:
    """Results of one ``i.js`` answer and its relative ``next`` URL (None at the end). Pure.

    Raises LayoutError when the text is not the JSON object i.js answers with.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LayoutError(f"i.js did not answer JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise LayoutError("i.js JSON has no results list")
    out = []
    for r in data["results"]:
        if not isinstance(r, dict) or not isinstance(r.get("image"), str) or not r["image"]:
            continue
        out.append(Result(url=r["image"], page_url=r.get("url") or None, title=strip_tags(r.get("title")),
                          width=as_int(r.get("width")), height=as_int(r.get("height")),
                          thumbnail=r.get("thumbnail")))
    nxt = data.get("next")
    return out, nxt if isinstance(nxt, str) and nxt else None


class DuckDuckGo(Engine):
    name = "duckduckgo"

    def _token(self, term: str) -> str:
        url = f"{self.base_url}/?{urlencode({'q': term, 'iar': 'images', 'iax': 'images', 'ia': 'images'})}"
        text = self.fetch_page(url).text()
        vqd = parse_vqd(text)
        if vqd is None:
            raise self.stopped(looks_blocked(text) or "layout_changed",
                               "no vqd token in the search page", url, text)
        return vqd

    def page_url(self, term: str, vqd: str, next_rel: str | None) -> str:
        params: dict[str, Any] = {"o": "json", "q": term, "l": "us-en", "vqd": vqd, "p": "1", "f": ",,,,,"}
        if next_rel:  # keep the engine's own paging parameters (s=offset …), with our token and query
            params.update({k: v for k, v in parse_qsl(urlsplit(next_rel).query) if k not in ("q", "vqd")})
        return f"{self.base_url}/i.js?{urlencode(params)}"

    def search(self, term: str, cursor: dict[str, Any]) -> Page:
        vqd = cursor.get("vqd") or self._token(term)
        next_rel = cursor.get("next")
        url = self.page_url(term, vqd, next_rel)
        try:
            fetched = self.fetch_page(url, referer=f"{self.base_url}/", accept="application/json")
        except SearchStopped:
            if not cursor.get("vqd"):
                raise
            vqd = self._token(term)  # a stale token from an earlier session: one fresh try
            url = self.page_url(term, vqd, next_rel)
            fetched = self.fetch_page(url, referer=f"{self.base_url}/", accept="application/json")
        text = fetched.text()
        try:
            results, nxt = parse_results(text)
        except LayoutError as exc:
            raise self.stopped(looks_blocked(text) or "layout_changed", str(exc), url, text) from None
        if not results:
            return self.empty_page(text, url, first_page=not next_rel, has_container=True)
        return Page(results, {"vqd": vqd, "next": nxt}, end=nxt is None)
