"""Fingerprints (:class:`~facecurate.catalog.HashRow`) as an Arrow table: how dedup's hashing results come back
from a worker that is not this process (``run --executor ray``), typed column for column as ``dedup_hashes``
stores them. Its own module so that the dedup stage, which the local path always imports, does not load pyarrow.
"""

from __future__ import annotations

import pyarrow as pa

from facecurate import result_arrow
from facecurate.catalog.dedup import HashRow
from facecurate.work import ArrowResults

# One row per file, field for field a ``dedup_hashes`` row: hashes signed 64-bit as SQLite stores them (null:
# the file failed, and ``error`` says why), the packed window hashes and the thumbnail as bytes.
RESULT_SCHEMA = pa.schema([
    ("path", pa.string()), ("algo", pa.string()), ("stamp", pa.string()), ("hash", pa.int64()),
    ("hash_flip", pa.int64()), ("windows", pa.binary()), ("pixels", pa.string()), ("thumb", pa.binary()),
    ("sharpness", pa.float64()), ("jpeg_quality", pa.int64()), ("error", pa.string()), ("hashed_at", pa.string()),
])


def results_to_arrow(rows: list[HashRow]) -> pa.Table:
    """One batch's fingerprints as a table of :data:`RESULT_SCHEMA`, one row per file."""
    return result_arrow.table(RESULT_SCHEMA, {name: [r[i] for r in rows] for i, name in enumerate(HashRow._fields)})


def results_from_arrow(table: pa.Table) -> list[HashRow]:
    """The fingerprints :func:`results_to_arrow` was given, equal field for field."""
    cols = result_arrow.columns(table, RESULT_SCHEMA)
    return [HashRow(*values) for values in zip(*(cols[name] for name in HashRow._fields), strict=True)]


RESULTS: ArrowResults[HashRow] = ArrowResults(RESULT_SCHEMA, results_to_arrow, results_from_arrow)
