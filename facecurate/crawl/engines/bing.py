"""Bing Images through its async HTML endpoint (plain HTTP; the most stable scrape).

Each result is an ``a.iusc`` whose ``m`` attribute is HTML-escaped JSON (``murl`` image, ``purl`` page, ``t``
title); the size and format sit in ``span.nowrap``. The older no-JS layout (``div.item > a.thumb``) is read
too, so a regional host still serving it keeps working. The next page starts after the results actually
returned (Bing's ``first`` is 1-based), not after a fixed 35.

2026: maintained scrapers (searxng 2026-08, ddgs 2026-04) still read this endpoint and these fields, and report
pages that come back empty now and then; so an empty page is asked for once more before it counts as "the end"
or "the layout changed". Bing's own filters go in ``qft``: ``[engines.bing] face_only`` (on by default: a face
dataset wants faces), ``size`` and ``license`` (see docs/engines.md for the codes).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode

from bs4 import BeautifulSoup, Tag

from facecurate.crawl.engines.base import Engine, Page, Result, as_int, looks_blocked, strip_tags

PAGE_SIZE = 35
_SIZE = re.compile(r"(\d+)\s*[x×]\s*(\d+)")
CONTAINER_MARKERS = ("dgControl", "dg_b", 'class="item"', "imgpt")


def parse_results(text: str) -> list[Result]:
    """Results of one async (or no-JS) Bing page, in rank order. Pure."""
    soup = BeautifulSoup(text, "html.parser")
    out: list[Result] = []
    # find_all/find rather than CSS select: the same elements, a third of the CPU (select costs ~0.1 ms of a
    # crawl's CPU per image, all of it in the crawl's one process)
    for a in soup.find_all("a", class_="iusc", m=True):
        try:
            meta: dict[str, Any] = json.loads(str(a["m"]))
        except (json.JSONDecodeError, TypeError):
            continue
        url = meta.get("murl")
        if not isinstance(url, str) or not url:
            continue
        width = height = None
        box = _box(a)
        info = box.find("span", class_="nowrap") if box else None
        if info is not None and (m := _SIZE.search(info.get_text(" "))):
            width, height = int(m.group(1)), int(m.group(2))
        out.append(Result(url=url, page_url=meta.get("purl") or None, title=strip_tags(meta.get("t")),
                          width=width, height=height, thumbnail=meta.get("turl")))
    if out:
        return out
    for item in soup.select("div.item"):  # the old no-JS layout
        thumb, tit = item.select_one("a.thumb[href]"), item.select_one("a.tit[href]")
        if thumb is None:
            continue
        des = item.select_one("div.des")
        info = item.select_one("div.fileInfo")
        m = _SIZE.search(info.get_text(" ")) if info else None
        out.append(Result(url=str(thumb["href"]), page_url=str(tit["href"]) if tit else None,
                          title=strip_tags(des.get_text(" ")) if des else None,
                          width=as_int(m.group(1)) if m else None, height=as_int(m.group(2)) if m else None))
    return out


def _box(a: Tag) -> Tag | None:
    """The result's card: the nearest ``.iuscp`` above it, else the nearest ``li`` (one walk up the tree)."""
    li = None
    for parent in a.parents:
        if "iuscp" in (parent.get("class") or ()):
            return parent
        if li is None and parent.name == "li":
            li = parent
    return li


def has_container(text: str) -> bool:
    return any(marker in text for marker in CONTAINER_MARKERS)


# Bing's qft codes for the [engines.bing] choices.
SIZES = {"small": "imagesize-small", "medium": "imagesize-medium", "large": "imagesize-large",
         "wallpaper": "imagesize-wallpaper"}
LICENSES = {"public_domain": "license-L1", "share": "license-L2_L3_L4_L5_L6_L7",
            "share_commercially": "license-L2_L3_L4", "modify": "license-L2_L3_L5_L6",
            "modify_commercially": "license-L2_L3"}


def filters(face_only: bool, size: str = "", license: str = "") -> str:
    """The ``qft`` value for Bing's face, size and licence filters ("" when none is set). Pure."""
    codes = (["face-face"] if face_only else []) + ([SIZES[size]] if size else []) + \
        ([LICENSES[license]] if license else [])
    return "".join(f"+filterui:{c}" for c in codes)


class Bing(Engine):
    name = "bing"

    def page_url(self, term: str, first: int) -> str:
        query: dict[str, Any] = {"q": term, "async": "1", "first": first, "count": PAGE_SIZE, "mkt": "en-US"}
        opts = self.ctx.options
        qft = filters(bool(opts.get("face_only", False)), str(opts.get("size", "")), str(opts.get("license", "")))
        if qft:
            query["qft"] = qft
        return f"{self.base_url}/images/async?{urlencode(query)}"

    def search(self, term: str, cursor: dict[str, Any]) -> Page:
        first = int(cursor.get("first", 1))
        url = self.page_url(term, first)
        referer = f"{self.base_url}/images/search?{urlencode({'q': term})}"
        text = self.fetch_page(url, referer=referer).text()
        results = parse_results(text)
        if not results and not looks_blocked(text):  # Bing sometimes answers an empty page: ask once more
            text = self.fetch_page(url, referer=referer).text()
            results = parse_results(text)
        if not results:
            return self.empty_page(text, url, first_page=first == 1, has_container=has_container(text))
        return Page(results, {"first": first + len(results)})
