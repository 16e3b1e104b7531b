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
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode

from facecurate.crawl.engines.base import VOID as _VOID
from facecurate.crawl.engines.base import Engine, Page, Result, as_int, looks_blocked, strip_tags, tree_affordable

PAGE_SIZE = 35
_SIZE = re.compile(r"(\d+)\s*[x×]\s*(\d+)")
CONTAINER_MARKERS = ("dgControl", "dg_b", 'class="item"', "imgpt")
# How BeautifulSoup's html.parser tree reads a page, for the one-pass reader below (written out rather than
# read from bs4, whose import costs ~45 ms of a crawl's start; a test checks they match): elements whose text
# get_text leaves out (those that never hold others are base.VOID).
_HIDDEN = frozenset({"rp", "rt", "script", "style", "template"})


def parse_results(text: str) -> list[Result]:
    """Results of one async (or no-JS) Bing page, in rank order. Pure."""
    out = _ResultCards.read(text)
    if out or not tree_affordable(text):
        return out
    from bs4 import BeautifulSoup  # here: importing bs4 (and soupsieve) costs ~45 ms of every crawl's start

    soup = BeautifulSoup(text, "html.parser")
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


class _Span:
    """A ``span.nowrap``: where its text starts in the page's text, and where it ends (None while open)."""

    __slots__ = ("end", "start")

    def __init__(self, start: int) -> None:
        self.start: int = start
        self.end: int | None = None


class _Box:
    """An open element a result's size may come from (a ``.iuscp`` card or an ``li``), and the first
    ``span.nowrap`` inside it (None: none yet)."""

    __slots__ = ("card", "size_span")

    def __init__(self, card: bool) -> None:
        self.card = card
        self.size_span: _Span | None = None


SIZE_TEXT = 4096  # characters of a span.nowrap read for the size ("3442 x 2972 · png"); a page can nest thousands


class _ResultCards(HTMLParser):
    """The ``a.iusc`` results of the async layout, read in one pass over the page without building a tree.

    It finds what BeautifulSoup found in the tree it built: each ``a.iusc[m]``; its card, the nearest
    ``.iuscp`` above it, else the nearest ``li``; the first ``span.nowrap`` in the card, read as
    ``get_text(" ")``; with the same nesting (an end tag closes up to the latest open element of its name
    and is ignored when none is open; void elements never open; text inside script, style, template, rt and
    rp is not text). Building the tree cost ~2 ms of the crawl's CPU per page, in the process whose threads
    make the downloads, while they are under way; tests/test_crawl_parsers.py checks both readings agree.

    Each tag and each piece of text costs the same however deep the page nests (a page of 20,000 nested
    elements took minutes when each step walked the open ones): the open cards, ``li`` and boxes still
    without a size are kept on stacks of their own, the text once for the whole page, and a span's text is
    the slice of it between its start and end tags, read up to :data:`SIZE_TEXT` characters."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._open: list[tuple[str, _Box | None]] = []  # each open element: its name, its _Box if it has one
        self._names: dict[str, int] = {}  # how many elements of each name are open
        self._results: list[tuple[dict[str, Any], _Box | None]] = []
        self._spans: list[tuple[int, _Span]] = []  # each open span.nowrap: its depth in _open, its span
        self._cards: list[_Box] = []  # the open .iuscp boxes, innermost last
        self._lis: list[_Box] = []  # the open li boxes that are not .iuscp, innermost last
        self._sizeless: list[_Box] = []  # the open boxes with no span.nowrap yet, innermost last
        self._text: list[str] = []  # the page's text outside hidden elements, piece by piece
        self._hidden = 0  # open elements whose text get_text leaves out

    @classmethod
    def read(cls, text: str) -> list[Result]:
        parser = cls()
        parser.feed(text)
        parser.close()
        out: list[Result] = []
        sizes: dict[int, tuple[int | None, int | None]] = {}
        for meta, box in parser._results:
            url = meta.get("murl")
            if not isinstance(url, str) or not url:
                continue
            width = height = None
            if box is not None and box.size_span is not None:
                key = id(box.size_span)
                if key not in sizes:
                    m = _SIZE.search(parser._span_text(box.size_span))
                    sizes[key] = (as_int(m.group(1)), as_int(m.group(2))) if m else (None, None)
                width, height = sizes[key]
            out.append(Result(url=url, page_url=meta.get("purl") or None, title=strip_tags(meta.get("t")),
                              width=width, height=height, thumbnail=meta.get("turl")))
        return out

    def _span_text(self, span: _Span) -> str:
        """A span's text as ``get_text(" ")`` reads it, up to :data:`SIZE_TEXT` characters."""
        end = len(self._text) if span.end is None else span.end
        pieces: list[str] = []
        size = 0
        for i in range(span.start, end):
            pieces.append(self._text[i][:SIZE_TEXT - size])
            size += len(pieces[-1]) + 1
            if size >= SIZE_TEXT:
                break
        return " ".join(pieces)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _VOID:
            self._start(tag, attrs)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs)  # <x/> opens and closes at once, void or not
        self.handle_endtag(tag)

    def _start(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}  # the last of a repeated attribute wins
        classes = values.get("class", "").split()
        if tag == "span" and "nowrap" in classes:
            span = _Span(len(self._text))
            self._spans.append((len(self._open), span))
            for waiting in self._sizeless:  # the first span.nowrap of every card around it that had none
                waiting.size_span = span
            self._sizeless.clear()
        is_result = tag == "a" and "iusc" in classes and "m" in values
        card = (self._cards[-1] if self._cards else self._lis[-1] if self._lis else None) if is_result else None
        box = _Box(True) if "iuscp" in classes else _Box(False) if tag == "li" else None
        if box is not None:
            (self._cards if box.card else self._lis).append(box)
            self._sizeless.append(box)
        self._open.append((tag, box))
        self._names[tag] = self._names.get(tag, 0) + 1
        if tag in _HIDDEN:
            self._hidden += 1
        if is_result:
            try:
                meta = json.loads(values["m"])
            except (ValueError, RecursionError):  # not JSON, nested past the parser's limit, or a giant number
                return
            if isinstance(meta, dict):
                self._results.append((meta, card))

    def handle_endtag(self, tag: str) -> None:
        if not self._names.get(tag):
            return
        while self._open:
            name, box = self._open.pop()
            self._names[name] -= 1
            if box is not None:
                (self._cards if box.card else self._lis).pop()
                if self._sizeless and self._sizeless[-1] is box:
                    self._sizeless.pop()
            if name in _HIDDEN:
                self._hidden -= 1
            if self._spans and self._spans[-1][0] == len(self._open):
                self._spans.pop()[1].end = len(self._text)
            if name == tag:
                return

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self._text.append(data)


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
