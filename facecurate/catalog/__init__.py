"""The SQLite catalog: the single source of truth, and the only code that speaks SQL.

One module per concern (schema and migrations, images and sources, faces, dedup, review log, queries and crawl
state), each returning typed records with JSON columns parsed; :mod:`facecurate.catalog.state` is the one
definition of an item's state in force. Files on disk are content-addressed and only referenced from here.
"""

from __future__ import annotations

from facecurate.catalog.base import utc_now
from facecurate.catalog.charts import ChartRow, ChartsMixin
from facecurate.catalog.counts import CountsMixin, DedupCounts, StatusReport
from facecurate.catalog.faces import FaceRecord, FaceRow, FacesMixin
from facecurate.catalog.images import ImageRow, ImagesMixin, SourceRow
from facecurate.catalog.items import ImageFacts, ItemsMixin, ItemState
from facecurate.catalog.queries import DownloadRow, QueriesMixin, QueryRow, RunRow
from facecurate.catalog.review import DecidedFace, ReviewMixin, RuledFace
from facecurate.catalog.schema import MIGRATIONS, SCHEMA_VERSION
from facecurate.catalog.state import Decision, State, state_of


class Catalog(CountsMixin, ImagesMixin, ItemsMixin, FacesMixin, QueriesMixin, ReviewMixin, ChartsMixin):
    """A connection to one workspace's catalog, with every concern's queries."""


__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Catalog",
    "ChartRow",
    "DecidedFace",
    "Decision",
    "DedupCounts",
    "DownloadRow",
    "FaceRecord",
    "FaceRow",
    "ImageFacts",
    "ImageRow",
    "ItemState",
    "QueryRow",
    "RuledFace",
    "RunRow",
    "SourceRow",
    "State",
    "StatusReport",
    "state_of",
    "utc_now",
]
