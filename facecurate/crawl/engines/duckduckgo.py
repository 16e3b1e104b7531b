"""DuckDuckGo images: a ``vqd`` token from the HTML page, then JSON pages from ``i.js``.

The token is tied to the query and the User-Agent, so one agent is kept for a whole query and the token is
carried in the cursor (a resumed run reuses it, and fetches a fresh one if the engine rejects it). ``next`` is
a relative URL for the following page; its absence ends the query.

2026: DuckDuckGo re-did its bot protection twice. What still answers (searxng's Feb and May 2026 fixes, see
docs/engines.md): the token page with ``t=h_``; ``i.js`` with ``u=bing, l, bpia=1, a=h_, ct`` and no ``f=``;
``Accept: */*``; the cookies ``ad``/``ah``/``l``/``p``; and no ``Accept-Language`` (image requests that carried
it were blocked from May 2026). The token may hold letters and ``_``: it is everything between the quotes.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from facecurate.crawl.engines.base import (
    MAX_URL,
    Engine,
    LayoutError,
    Page,
    Result,
    SearchStopped,
    as_int,
    as_text,
    load_json,
    looks_blocked,
    strip_tags,
)
from facecurate.crawl.http import Fetched

_VQD = re.compile(r"""vqd\s*=\s*"([^"\s]+)"|vqd\s*=\s*'([^'\s]+)'|vqd=([^&"'\s<>]+)""")


def parse_vqd(text: str) -> str | None:
    """The token in any of the forms seen: ``vqd="…"``, ``vqd='…'``, ``vqd=…&``, whatever characters it
    holds (``4-98765_abc`` whole, not ``4-98765``). Pure."""
    m = _VQD.search(text)
    return next((g for g in m.groups() if g), None) if m else None


def parse_results(text: str) -> tuple[list[Result], str | None]:
    """Results of one ``i.js`` answer and its relative ``next`` URL (None at the end). Pure.

    Raises LayoutError when the text is not the JSON object i.js answers with.
    """
    data = load_json(text, "i.js")
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise LayoutError("i.js JSON has no results list")
    out = []
    for r in data["results"]:
        if not isinstance(r, dict) or not isinstance(r.get("image"), str) or not r["image"]:
            continue
        out.append(Result(url=r["image"], page_url=r.get("url") or None, title=strip_tags(r.get("title")),
                          width=as_int(r.get("width")), height=as_int(r.get("height")),
                          thumbnail=r.get("thumbnail")))
    return out, as_text(data.get("next"), MAX_URL, cut=False)


class DuckDuckGo(Engine):
    name = "duckduckgo"

    @property
    def region(self) -> str:
        return str(self.ctx.options.get("region") or "us-en")

    def cookies(self) -> dict[str, str]:
        """The cookies a browser that chose this region and safe-search level carries (searxng 2026-02)."""
        country, _, lang = self.region.partition("-")
        return {"Cookie": f"ad={lang}_{country.upper()}; ah={self.region}; l={self.region}; p=-1"}

    def _token(self, term: str) -> str:
        url = f"{self.base_url}/?{urlencode({'q': term, 'iar': 'images', 't': 'h_'})}"
        text = self.fetch_page(url, headers=self.cookies()).text()
        vqd = parse_vqd(text)
        if vqd is None:
            raise self.stopped(looks_blocked(text) or "layout_changed",
                               "no vqd token in the search page", url, text)
        return vqd

    def page_url(self, term: str, vqd: str, next_rel: str | None) -> str:
        country = self.region.partition("-")[0]
        params: dict[str, Any] = {"o": "json", "q": term, "u": "bing", "l": self.region, "bpia": "1",
                                  "vqd": vqd, "a": "h_", "ct": country.upper(), "p": "-1"}
        if next_rel:  # the engine's own offset (s=…) from its next link; nothing else of it (no f=)
            try:
                s = dict(parse_qsl(urlsplit(next_rel).query)).get("s")
            except ValueError:  # a next link that does not split (http://[::1?s=…): no offset in it
                s = None
            if s is not None:
                params["s"] = s
        return f"{self.base_url}/i.js?{urlencode(params)}"

    def _json(self, url: str) -> Fetched:
        return self.fetch_page(url, referer=f"{self.base_url}/", accept="*/*", headers=self.cookies(),
                               accept_language=False)

    def search(self, term: str, cursor: dict[str, Any]) -> Page:
        vqd = cursor.get("vqd") or self._token(term)
        next_rel = cursor.get("next")
        url = self.page_url(term, vqd, next_rel)
        try:
            fetched = self._json(url)
        except SearchStopped:
            if not cursor.get("vqd"):
                raise
            vqd = self._token(term)  # a stale token from an earlier session: one fresh try
            url = self.page_url(term, vqd, next_rel)
            fetched = self._json(url)
        text = fetched.text()
        try:
            results, nxt = parse_results(text)
        except LayoutError as exc:
            raise self.stopped(looks_blocked(text) or "layout_changed", str(exc), url, text) from None
        if not results:
            return self.empty_page(text, url, first_page=not next_rel, has_container=True)
        return Page(results, {"vqd": vqd, "next": nxt}, end=nxt is None)
