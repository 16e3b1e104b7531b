"""Helpers for the Arrow tables that carry a work type's results back to the driver (:class:`facecurate.work.
ArrowResults`): building a table of a declared schema from Python values, reading its columns back, and the
one-column schema of work whose result is a plain value.

Kept apart from :mod:`facecurate.work` because this imports pyarrow: only the code that ships results to or
from another process (the ``ray`` executor, the work types' codecs it asks for) loads it, never the local path.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from facecurate.work import ArrowResults


def table(schema: pa.Schema, columns: dict[str, list[Any]]) -> pa.Table:
    """The columns as a table of exactly ``schema`` (a column it lacks, or one it does not name, is an error).

    A string Python can hold but UTF-8 cannot (a lone surrogate: what a file name decoded with
    ``surrogateescape`` carries, or a JSON ``\\ud83d`` cut in half) would fail the whole batch's table; such a
    string is written with the bad characters escaped (``\\ud83d`` as text) instead, so one odd message costs
    nothing else. SQLite refuses such strings too, so the local path could not have stored them either."""
    if set(columns) != set(schema.names):
        raise ValueError(f"result columns {sorted(columns)} do not match the declared schema {schema.names}")
    try:
        return pa.Table.from_pydict(columns, schema=schema)
    except UnicodeEncodeError:
        return pa.Table.from_pydict({k: _encodable(v) for k, v in columns.items()}, schema=schema)


def _encodable(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_encodable(k): _encodable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encodable(v) for v in value]
    if isinstance(value, tuple):  # a map's (key, value) pair stays a pair
        return tuple(_encodable(v) for v in value)
    return value


def columns(table: pa.Table, schema: pa.Schema) -> dict[str, list[Any]]:
    """Each column of ``schema`` as Python values, after checking that the table has that schema: a worker that
    sent something else is a bug to stop at, before anything of it reaches the catalog."""
    if not table.schema.equals(schema):
        raise ValueError(f"a result table does not have its declared schema:\n{table.schema}\nexpected:\n{schema}")
    return {name: table.column(name).to_pylist() for name in schema.names}


def value_results(type_: pa.DataType) -> ArrowResults[Any]:
    """Results that are one plain value per item (an int, a string), in a column named ``value``: for small
    work such as the scale benchmark's no-op and the executors' tests."""
    schema = pa.schema([pa.field("value", type_)])

    def to_arrow(results: list[Any]) -> pa.Table:
        return table(schema, {"value": list(results)})

    def from_arrow(got: pa.Table) -> list[Any]:
        return columns(got, schema)["value"]

    return ArrowResults(schema, to_arrow, from_arrow)

