"""Each work type's results survive the trip through their declared Arrow table exactly: the same values, float
bits included (NaN, -0.0, the smallest subnormal), the same key orders, None kept apart from empty, unicode
intact. Cases are drawn from seeded generators that lean on edge values, plus the edges themselves, so a failure
names its seed. A declared schema names every field of its result type, so a field added later cannot be
dropped silently on the way back from a worker.
"""

from __future__ import annotations

import dataclasses
import math
import random
import struct
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest

from facecurate import result_arrow
from facecurate.catalog import DownloadRow, FaceRecord
from facecurate.catalog.dedup import HashRow
from facecurate.crawl import download_work
from facecurate.crawl.download import Downloaded
from facecurate.crawl.http import Fetched
from facecurate.dedup import fingerprint_arrow
from facecurate.faces import crop_arrow
from facecurate.faces.crop_photo import CropOutcome
from facecurate.rules import filter_work
from facecurate.rules.filter_work import Measured
from facecurate.work import ArrowResults

INT64 = (0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63))
FLOATS = (0.0, -0.0, 1.0, 0.1 + 0.2, math.nan, -math.nan, math.inf, -math.inf, 5e-324, 2.2250738585072014e-308,
          1.7976931348623157e308, -1e-300, 123456.789012345678)
TEXTS = ("", "crop_failed", "Ümlaut façade", "日本語の理由", "🙂🤦🏽‍♀️ emoji", "نص عربي \u202e reversed",
         "nul\x00inside", "line\nbreak\ttab", "x" * 10_000, "\U0010ffff")
BLOBS = (b"", b"\x00", bytes(range(256)), b"\xff\xd8\xff" + b"\x00" * 5000)


def bits(value: Any) -> Any:
    """A value with every float as its 8 bytes, so equality is exact (NaN equals NaN only bit for bit, -0.0 is
    not 0.0) and types count (True is not 1, a list is not a tuple)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    if isinstance(value, int):
        return ("int", value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, [(f.name, bits(getattr(value, f.name))) for f in dataclasses.fields(value)])
    if isinstance(value, HashRow):
        return ("HashRow", [bits(v) for v in value])
    if isinstance(value, dict):
        return ("dict", [(bits(k), bits(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [bits(v) for v in value])
    if isinstance(value, tuple):
        return ("tuple", [bits(v) for v in value])
    return (type(value).__name__, value)


class Draw:
    """Seeded choices that favour the edge values."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def int64(self, lo: int = -(2**63), hi: int = 2**63 - 1) -> int:
        edges = [v for v in INT64 if lo <= v <= hi]
        return self.r.choice(edges) if edges and self.r.random() < 0.5 else self.r.randint(lo, hi)

    def float(self) -> float:
        return self.r.choice(FLOATS) if self.r.random() < 0.5 else self.r.uniform(-1e6, 1e6)

    def text(self) -> str:
        if self.r.random() < 0.6:
            return self.r.choice(TEXTS)
        return "".join(chr(self.r.choice([self.r.randint(32, 126), self.r.randint(0xA0, 0xD7FF),
                                          self.r.randint(0xE000, 0x10FFFF)])) for _ in range(self.r.randint(0, 30)))

    def maybe(self, make: Callable[[], Any]) -> Any:
        return None if self.r.random() < 0.3 else make()

    def floats(self, n: int) -> list[float]:
        return [self.float() for _ in range(n)]

    def count(self, most: int) -> int:
        return self.r.choice([0, 0, 1, self.r.randint(0, most)])


def face(d: Draw) -> FaceRecord:
    return FaceRecord(face_index=d.int64(0), det_score=d.float(), bbox=d.floats(4),
                      landmarks=[d.floats(2) for _ in range(5)], quad=[d.floats(2) for _ in range(d.count(4))],
                      oob_fraction=d.float(), above_fraction=d.float(), side_fraction=d.float(), eye_angle=d.float(),
                      crop_path=d.text(), crop_size=d.int64())


def crop_outcome(d: Draw) -> CropOutcome:
    found = d.maybe(lambda: [{"box": d.floats(4), "prob": d.float()} for _ in range(d.count(6))])
    if d.r.random() < 0.3:  # a failure: no faces, a message and a reason code
        return CropOutcome(None, d.text(), d.r.choice(["crop_failed", "too_large", d.text()]), found)
    return CropOutcome([face(d) for _ in range(d.count(4))], found=found)


def measured(d: Draw) -> Measured:
    scores = {d.text(): d.maybe(d.float) for _ in range(d.count(12))}
    return Measured(scores, d.maybe(d.text))


def downloaded(d: Draw) -> Downloaded:
    row = DownloadRow(url_id=d.int64(), url=d.text(), rank=d.int64(), page_url=d.maybe(d.text), title=d.maybe(d.text),
                      license=d.maybe(d.text), author=d.maybe(d.text), engine=d.text(), query=d.text(),
                      label=d.text())
    fetched = Fetched(url=d.text(), status=d.maybe(lambda: d.int64(100, 599)), body=d.maybe(lambda: d.r.choice(BLOBS)),
                      final_url=d.maybe(d.text), headers={d.text(): d.text() for _ in range(d.count(5))},
                      reason=d.maybe(d.text), message=d.text(), attempts=d.int64(0))
    if d.r.random() < 0.5:
        return Downloaded(row, fetched, reason=d.text(), message=d.text())
    return Downloaded(row, fetched, data=d.r.choice(BLOBS), sha256="ab" * 32, format=d.text(), ext=d.text(),
                      width=d.int64(0), height=d.int64(0), size=d.int64(0))


def hash_row(d: Draw) -> HashRow:
    if d.r.random() < 0.3:
        return HashRow(d.text(), d.text(), d.text(), None, None, None, None, None, None, None, d.text(), d.text())
    return HashRow(d.text(), d.text(), d.text(), d.int64(), d.int64(), d.maybe(lambda: d.r.choice(BLOBS)),
                   d.maybe(d.text), d.maybe(lambda: d.r.choice(BLOBS)), d.maybe(d.float),
                   d.maybe(lambda: d.int64(0, 100)), None, d.text())


CODECS: list[tuple[str, ArrowResults[Any], Callable[[Draw], Any]]] = [
    ("crop", crop_arrow.RESULTS, crop_outcome), ("filter", filter_work.RESULTS, measured),
    ("download", download_work.RESULTS, downloaded), ("fingerprint", fingerprint_arrow.RESULTS, hash_row),
]


@pytest.mark.parametrize(("name", "codec", "make"), CODECS, ids=[c[0] for c in CODECS])
@pytest.mark.parametrize("seed", range(40))
def test_results_come_back_from_their_arrow_table_exactly(name: str, codec: ArrowResults[Any],
                                                          make: Callable[[Draw], Any], seed: int):
    d = Draw(seed)
    results = [make(d) for _ in range(d.r.choice([0, 1, 2, 17]))]
    table = codec.to_arrow(results)
    assert table.schema.equals(codec.schema) and table.num_rows == len(results)
    again = codec.from_arrow(table)
    assert [bits(r) for r in again] == [bits(r) for r in results]
    # and through Arrow's own wire format, as a download task sends it
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    wired = pa.ipc.open_stream(sink.getvalue()).read_all()
    assert [bits(r) for r in codec.from_arrow(wired)] == [bits(r) for r in results]


def test_none_empty_and_nan_stay_apart():
    outcomes = [CropOutcome(None, "unreadable", "bad_image"), CropOutcome([]), CropOutcome([], found=[]),
                CropOutcome([], found=[{"box": [math.nan, -0.0, 1.0, 2.0], "prob": math.nan}])]
    table = crop_arrow.results_to_arrow(outcomes)
    assert table.column("faces").to_pylist()[:2] == [None, []]  # a failed photo is not a photo without a face
    assert table.column("found").to_pylist()[1:3] == [None, []]
    back = crop_arrow.results_from_arrow(table)
    assert back[0].as_outcome().reason == "bad_image" and back[1].as_outcome() == []
    [det] = back[3].found or []
    assert math.isnan(det["prob"]) and math.copysign(1.0, det["box"][1]) == -1.0
    scores = filter_work.results_from_arrow(filter_work.results_to_arrow(
        [Measured({"eyes": math.nan, "blur": None, "tilt": 3.5}), Measured({}, "crop missing")]))
    assert list(scores[0].scores) == ["eyes", "blur", "tilt"] and math.isnan(scores[0].scores["eyes"] or 0)
    assert scores[0].scores["blur"] is None and scores[1] == Measured({}, "crop missing")


def test_a_string_utf8_cannot_hold_is_escaped_and_costs_its_batch_nothing():
    """A lone surrogate (a file name decoded with surrogateescape, half an emoji from JSON) cannot be UTF-8;
    the row keeps a readable escape and every other value of the batch comes back unchanged."""
    outcomes = [CropOutcome(None, "raw/\udcff.jpg: unreadable", "bad_image"), CropOutcome(None, "fine 🙂", "x")]
    back = crop_arrow.results_from_arrow(crop_arrow.results_to_arrow(outcomes))
    assert back[0].error == "raw/\\udcff.jpg: unreadable" and back[1] == outcomes[1]
    back_m = filter_work.results_from_arrow(filter_work.results_to_arrow([Measured({"\ud83d": 1.0})]))
    assert back_m[0].scores == {"\\ud83d": 1.0}


def test_an_int_beyond_int64_is_refused_not_wrapped():
    row = HashRow("p", "a", "s", 2**64 - 1, None, None, None, None, None, None, None, "t")  # unsigned: a bug
    with pytest.raises((OverflowError, pa.ArrowInvalid)):
        fingerprint_arrow.results_to_arrow([row])


def test_a_table_of_another_schema_is_refused_before_it_becomes_results():
    blob = pa.table({"result": pa.array([b"\x80\x04pickled"], pa.binary())})
    with pytest.raises(ValueError, match="declared schema"):
        crop_arrow.results_from_arrow(blob)
    wrong_type = crop_arrow.results_to_arrow([CropOutcome([])]).cast(
        pa.schema([(f.name, f.type) if f.name != "reason" else ("reason", pa.large_string())
                   for f in crop_arrow.RESULT_SCHEMA]))
    with pytest.raises(ValueError, match="declared schema"):
        crop_arrow.results_from_arrow(wrong_type)
    with pytest.raises(ValueError, match="do not match"):
        result_arrow.table(crop_arrow.RESULT_SCHEMA, {"faces": [None]})


def test_every_field_of_a_result_type_has_its_column():
    def names(cls: Any) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def struct_names(t: pa.DataType) -> list[str]:
        return [t.field(i).name for i in range(t.num_fields)]

    assert struct_names(crop_arrow.FACE_TYPE) == names(FaceRecord)
    assert crop_arrow.RESULT_SCHEMA.names == names(CropOutcome)
    assert filter_work.RESULT_SCHEMA.names == names(Measured)
    assert struct_names(download_work.ROW_TYPE) == names(DownloadRow)
    assert struct_names(download_work.FETCHED_TYPE) == names(Fetched)
    assert download_work.RESULT_SCHEMA.names == names(Downloaded)
    assert fingerprint_arrow.RESULT_SCHEMA.names == list(HashRow._fields)


def test_results_are_typed_columns_not_a_blob():
    """The columns a reader of the tables relies on: ids int64, scores float64, a crop's faces a list of structs."""
    s = crop_arrow.RESULT_SCHEMA
    assert pa.types.is_list(s.field("faces").type) and pa.types.is_struct(s.field("faces").type.value_type)
    assert crop_arrow.FACE_TYPE.field("det_score").type == pa.float64()
    assert filter_work.RESULT_SCHEMA.field("scores").type == pa.map_(pa.string(), pa.float64())
    assert download_work.ROW_TYPE.field("url_id").type == pa.int64()
    assert fingerprint_arrow.RESULT_SCHEMA.field("hash").type == pa.int64()
    binaries = {name for codec in (crop_arrow, filter_work, download_work, fingerprint_arrow)
                for f in codec.RESULT_SCHEMA for name in [f"{codec.__name__}.{f.name}"] if pa.types.is_binary(f.type)}
    # the downloaded bytes (null from a worker, which stores them) and the fingerprint's packed hashes
    assert binaries == {"facecurate.crawl.download_work.data", "facecurate.dedup.fingerprint_arrow.windows",
                        "facecurate.dedup.fingerprint_arrow.thumb"}
