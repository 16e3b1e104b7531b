"""The crawl stage: search engines (``engines/``), a polite resumable downloader (``download``), and the
stage that ties them to tracked queries and the catalog (``stage``)."""

from __future__ import annotations

from facecurate.crawl.stage import Callbacks, PairReport, run_crawl

__all__ = ["Callbacks", "PairReport", "run_crawl"]
