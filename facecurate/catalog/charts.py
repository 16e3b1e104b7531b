"""The report's charts read every item once: its states, reasons, scores, label, first query and when it came.

One row per ``item_state`` row (a face, or a photo with no face row), so the charts count exactly what
``status``, the gallery and ``export`` count. The rendering (facecurate.review.charts) groups these rows in
Python: at 10,000 faces one pass over the view costs less than a GROUP BY per chart.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from facecurate.catalog.base import CatalogBase
from facecurate.catalog.state import State


@dataclass(frozen=True)
class ChartRow:
    """One item as the charts see it; ``face`` is False on photo rows (no face, failed, not cropped yet)."""

    face: bool
    state: State               # in force: a person's decision on top of the rules
    rule_state: State          # what the stages said
    reasons: list[str]         # the rules that fired (faces only)
    scores: dict[str, object]  # every measure filter stored (faces only)
    label: str | None
    query: str | None          # the search term of the photo's first source; None for imported files
    added_at: str              # when the photo entered the workspace (ISO 8601, UTC)


class ChartsMixin(CatalogBase):
    def chart_rows(self) -> Iterator[ChartRow]:
        """Every item of the ``item_state`` view with its photo's label, first query and arrival, streamed."""
        for r in self.conn.execute(
                "SELECT st.face_id IS NOT NULL AS face, st.state, st.rule_state, st.reasons, st.scores, st.label, "
                "s.query, i.added_at FROM item_state st JOIN images i ON i.id = st.image_id "
                "LEFT JOIN sources s ON s.id = (SELECT MIN(id) FROM sources WHERE image_id = st.image_id "
                "AND status = 'ok') ORDER BY st.image_id, st.face_index"):
            yield ChartRow(bool(r[0]), State(r[1]), State(r[2]), list(json.loads(r[3])), dict(json.loads(r[4])),
                           r[5], r[6], r[7])
