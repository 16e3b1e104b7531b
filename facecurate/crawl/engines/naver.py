r"""Naver image search (many of facecurate's users search in Korean).

The result page carries ``var imageSearchTabData = {...}`` — a JavaScript object literal, not JSON — whose
``content.items[]`` hold ``originalUrl``, ``link`` (page), ``title`` (HTML), ``orgWidth``/``orgHeight``.
Pages start at 1, 51, 101…; the next start follows the items actually returned.

2026: Naver redesigned the page (searxng fixed it in Jun and Sep 2026); the data is still
``var imageSearchTabData=`` with varying spacing, so the parser anchors on ``var\s+imageSearchTabData\s*=``
(an object of the same name elsewhere in the page is not taken for it). Items now carry a ``type``: only
``image`` ones are results; ads and shopping items (``shopAd`` …) are dropped, as public scripts do.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from facecurate.crawl.engines.base import Engine, LayoutError, Page, Result, as_int, looks_blocked, strip_tags
from facecurate.crawl.engines.jsobject import parse_object

VARIABLE = "imageSearchTabData"
PAGE_SIZE = 50
NO_RESULTS = ("검색결과가 없습니다", "no results")


_ANCHOR = re.compile(rf"var\s+{VARIABLE}\s*=")


def parse_results(text: str) -> list[Result]:
    """Results of one Naver image page (``type == 'image'`` items; an item without a type is an image, as
    before 2026). Pure; LayoutError when the data object is missing or malformed."""
    anchor = _ANCHOR.search(text)
    data = parse_object(text[anchor.start():] if anchor else text, VARIABLE)
    content = data.get("content") if isinstance(data, dict) else None
    items = content.get("items") if isinstance(content, dict) else None
    if not isinstance(items, list):
        raise LayoutError(f"`{VARIABLE}` has no content.items list")
    out = []
    for it in items:
        if not isinstance(it, dict) or it.get("type", "image") != "image":
            continue
        url = it.get("originalUrl") or it.get("viewerThumb") or it.get("thumb")
        if not isinstance(url, str) or not url:
            continue
        out.append(Result(url=url, page_url=it.get("link") or None, title=strip_tags(it.get("title")),
                          width=as_int(it.get("orgWidth")), height=as_int(it.get("orgHeight")),
                          thumbnail=it.get("thumb")))
    return out


class Naver(Engine):
    name = "naver"

    def page_url(self, term: str, start: int) -> str:
        return f"{self.base_url}/search.naver?{urlencode({'where': 'image', 'query': term, 'start': start})}"

    def search(self, term: str, cursor: dict[str, Any]) -> Page:
        start = int(cursor.get("start", 1))
        url = self.page_url(term, start)
        text = self.fetch_page(url).text()
        try:
            results = parse_results(text)
        except LayoutError as exc:
            if any(marker in text for marker in NO_RESULTS) and not looks_blocked(text):
                return Page([], {}, end=True)
            raise self.stopped(looks_blocked(text) or "layout_changed", str(exc), url, text) from None
        if not results:
            return self.empty_page(text, url, first_page=start == 1, has_container=True)
        return Page(results, {"start": start + len(results)})
