"""Google Images over plain HTTP: the feature-phone page, whose results are ``/imgres?imgurl=…`` links.

The desktop page needs JavaScript since January 2025. What a maintained meta-search engine does instead
(searxng, Jul/Aug 2026; the iPhone GSA agents it used before stopped working in July 2026): ask
``/wml/search?q=…&tbm=isch&start=10·(page-1)`` with a Nokia feature-phone User-Agent, strip a leading
``<?xml …?>``, and read every ``a[href*="/imgres?"]``: ``imgurl`` (image), ``imgrefurl`` (page), ``w``, ``h``,
``tbnid`` (thumbnail). A redirect to ``/sorry/`` is a CAPTCHA. ``[engines.google] face_only`` adds
``tbs=itp:face``. The Selenium path stays available as ``google-browser``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

from facecurate.crawl.engines.base import Engine, Page, Result, as_int, strip_tags, tree_affordable

PAGE_SIZE = 10
# The agent family that gets the /imgres answer in Aug 2026 (see docs/engines.md); fixed per engine.
FEATURE_PHONE_UA = "Nokia6230i/2.0 (03.80) Profile/MIDP-2.0 Configuration/CLDC-1.1"
THUMB = "https://encrypted-tbn0.gstatic.com/images?q=tbn:{}"
NO_RESULTS = ("did not match any image results", "did not match any documents")
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>")


def is_thumbnail(src: str | None) -> bool:
    """gstatic thumbnails (``images?q=tbn:…``), inline data and empty sources are not the full image. Pure."""
    if not src:
        return True
    try:
        host = urlsplit(src).hostname or ""
    except ValueError:  # http://[::1 and the like: no image to show either
        return True
    return src.startswith(("data:", "blob:")) or "gstatic.com" in host or "tbn:" in src


def parse_imgres(href: str) -> Result | None:
    """A ``/imgres?imgurl=…&imgrefurl=…&w=…&h=…&tbnid=…`` link as a result. Pure."""
    parts = urlsplit(href)
    if not parts.path.endswith("/imgres"):
        return None
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    if not q.get("imgurl"):
        return None
    return Result(url=q["imgurl"], page_url=q.get("imgrefurl"), width=as_int(q.get("w")),
                  height=as_int(q.get("h")), thumbnail=THUMB.format(q["tbnid"]) if q.get("tbnid") else None)


def parse_results(text: str, base_url: str = "https://www.google.com") -> list[Result]:
    """Results of one feature-phone page, in page order, each image once. Pure."""
    from bs4 import BeautifulSoup  # here: importing bs4 (and soupsieve) costs ~45 ms of every crawl's start

    out: list[Result] = []
    if not tree_affordable(text):
        return out
    soup = BeautifulSoup(_XML_DECL.sub("", text, count=1), "html.parser")
    seen: set[str] = set()
    for a in soup.select('a[href*="/imgres?"]'):
        try:
            found = parse_imgres(urljoin(base_url + "/", str(a["href"])))
        except ValueError:  # a link that does not split (http://[::1/imgres?…): not a result
            continue
        if found is None or found.url in seen:
            continue
        seen.add(found.url)
        img = a.find("img")
        title = strip_tags(a.get_text(" ")) or (strip_tags(str(img.get("alt") or "")) if img else None)
        out.append(Result(found.url, found.page_url, title, found.width, found.height, thumbnail=found.thumbnail))
    return out


def has_container(text: str) -> bool:
    """A page Google answered for a search (with or without results), as opposed to something else."""
    return any(marker in text for marker in NO_RESULTS)


class Google(Engine):
    name = "google"

    def page_url(self, term: str, start: int) -> str:
        query: dict[str, Any] = {"q": term, "tbm": "isch", "start": start, "safe": "off", "hl": "en"}
        if self.ctx.options.get("face_only"):
            query["tbs"] = "itp:face"
        return f"{self.base_url}/wml/search?{urlencode(query)}"

    def search(self, term: str, cursor: dict[str, Any]) -> Page:
        start = int(cursor.get("start", 0))
        url = self.page_url(term, start)
        text = self.fetch_page(url, user_agent=FEATURE_PHONE_UA).text()
        results = parse_results(text, self.base_url)
        if not results:
            return self.empty_page(text, url, first_page=start == 0, has_container=has_container(text))
        return Page(results, {"start": start + PAGE_SIZE})
