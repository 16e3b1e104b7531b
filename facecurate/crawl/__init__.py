"""The crawl stage: tracked queries (``queries``, its input), search engines (``engines/``), a polite resumable
downloader (``download``), and the stage that ties them to the catalog (``stage``)."""

from __future__ import annotations

from facecurate.crawl.queries import QueryListing, QueryStatus, check_terms, list_queries
from facecurate.crawl.stage import CrawlSummary, PairReport, run_crawl

__all__ = ["CrawlSummary", "PairReport", "QueryListing", "QueryStatus", "check_terms", "list_queries", "run_crawl"]
