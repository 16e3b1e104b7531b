"""Search engines, one module each behind one interface (:class:`~facecurate.crawl.engines.base.Engine`)."""

from __future__ import annotations

from facecurate.crawl.engines.base import Engine, EngineContext, Page, Result, SearchStopped
from facecurate.crawl.engines.bing import Bing
from facecurate.crawl.engines.duckduckgo import DuckDuckGo
from facecurate.crawl.engines.google import Google
from facecurate.crawl.engines.google_browser import GoogleBrowser
from facecurate.crawl.engines.naver import Naver
from facecurate.crawl.engines.wikimedia import Wikimedia

ENGINES: dict[str, type[Engine]] = {e.name: e for e in (Bing, DuckDuckGo, Google, GoogleBrowser, Naver, Wikimedia)}

__all__ = ["ENGINES", "Engine", "EngineContext", "Page", "Result", "SearchStopped"]
