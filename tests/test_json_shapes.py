"""Every command's ``--json`` is its summary record, in one documented shape.

The records (dataclasses) are the schema: each command's output must validate against its record with pydantic
and print back identically (so no key is missing, extra, or of another type), and a field name means one JSON
type across every record of every command (``failed`` is always a list of failures, never a count).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter
from typer.testing import CliRunner

from facecurate import output
from facecurate.calibrate import Calibration
from facecurate.catalog import StatusReport
from facecurate.cli import app
from facecurate.crawl import CrawlSummary, QueryListing
from facecurate.crawl.check import CheckReport, Replayed
from facecurate.dedup import DedupOptions, DedupSummary
from facecurate.demo import QUERIES, build_results, configure
from facecurate.demo_engine import DemoEngine
from facecurate.evaluate import Evaluation
from facecurate.export import ExportSummary
from facecurate.faces.crop import CropSummary
from facecurate.ingest import ImportSummary
from facecurate.pipeline import RunSummary
from facecurate.review.calibration import CalibrationQueue, DisagreementReport
from facecurate.review.report import HtmlReport, ReasonReport
from facecurate.rules.stage import FilterSummary, RuleExplained
from facecurate.workspace import init_workspace

runner = CliRunner()
# The record each command prints; option records echo the settings table and keep its key names.
COMMAND_RECORDS: dict[str, Any] = {
    "import": ImportSummary, "crawl": CrawlSummary, "queries list": QueryListing, "dedup": DedupSummary,
    "crop": CropSummary, "filter": FilterSummary, "filter --explain": list[RuleExplained], "export": ExportSummary,
    "status": StatusReport, "review --list": ReasonReport, "run": RunSummary, "evaluate": Evaluation,
    "report": HtmlReport, "calibrate": Calibration, "review --calibrate": CalibrationQueue,
    "review --list --disagree": DisagreementReport, "engines check": CheckReport, "engines replay": Replayed,
}
SETTINGS_ECHOES = (DedupOptions,)


def _stage_result_names() -> dict[str, Any]:
    """What ``pipeline.StageResult`` names (imported there only for type checkers)."""
    return {"CrawlSummary": CrawlSummary, "DedupSummary": DedupSummary, "CropSummary": CropSummary,
            "FilterSummary": FilterSummary, "ExportSummary": ExportSummary}


def _hints(cls: type) -> dict[str, Any]:
    import facecurate.pipeline as pipeline

    return typing.get_type_hints(cls, globalns={**vars(pipeline), **vars(__import__(cls.__module__, fromlist=["*"])),
                                                **_stage_result_names()})


def _kinds(tp: Any) -> set[str]:
    """The JSON types a Python annotation prints as (None left out: null goes with any type)."""
    origin = typing.get_origin(tp)
    if tp is type(None):
        return set()
    if isinstance(tp, str):
        return _kinds(eval(tp, {**vars(typing), **_stage_result_names()}))
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_kinds(a) for a in typing.get_args(tp)))
    if origin is typing.Literal:
        return {"string" if isinstance(a, str) else "boolean" if isinstance(a, bool) else "number"
                for a in typing.get_args(tp)}
    if getattr(tp, "__value__", None) is not None:  # a TypeAlias statement
        return _kinds(tp.__value__)
    base = origin or tp
    if base is bool:
        return {"boolean"}
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return {"string"}
    if base in (int, float):
        return {"number"}
    if base in (str,) or (isinstance(base, type) and issubclass(base, Path)):
        return {"string"}
    if base in (list, tuple, set, frozenset) or (isinstance(base, type) and issubclass(base, (list, tuple))):
        return {"array"}
    if dataclasses.is_dataclass(base) or (isinstance(base, type) and issubclass(base, Mapping)):
        return {"object"}
    raise AssertionError(f"no JSON type known for {tp!r}")


def _records(tp: Any, seen: set[type]) -> Iterator[type]:
    """Every dataclass reachable from an annotation."""
    if isinstance(tp, str):
        tp = eval(tp, {**vars(typing), **_stage_result_names()})
    if typing.get_origin(tp) is typing.Literal:
        return
    for arg in typing.get_args(tp):
        yield from _records(arg, seen)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type) and tp not in seen:
        seen.add(tp)
        yield tp
        for hint in _hints(tp).values():
            yield from _records(hint, seen)


def test_a_field_name_means_one_json_type_in_every_record():
    kinds: dict[str, dict[str, str]] = {}
    seen: set[type] = set()
    for record in COMMAND_RECORDS.values():
        for cls in _records(record, seen):
            if cls in SETTINGS_ECHOES:
                continue
            for f in dataclasses.fields(cls):
                if not f.repr:
                    continue  # not printed
                for kind in _kinds(_hints(cls)[f.name]):
                    kinds.setdefault(f.name, {})[kind] = cls.__name__
    clashes = {name: where for name, where in kinds.items() if len(where) > 1}
    assert not clashes, "\n".join(f"{k}: {v}" for k, v in clashes.items())
    assert kinds["failed"] == {"array": kinds["failed"]["array"]}
    assert len(seen) > 15  # the walk really went through the nested records


# -- every command, run for real ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory, demo_dir_module: Path) -> dict[str, Any]:
    """Each command's --json on one workspace crawled from the demo's loopback engine."""
    root = tmp_path_factory.mktemp("shapes")
    ws = init_workspace(root / "ws")
    w = ["-w", str(ws.root)]
    out: dict[str, Any] = {}

    def invoke(name: str, *args: str, code: int = 0) -> None:
        result = runner.invoke(app, [*args, "--json"])
        assert result.exit_code == code, result.output
        out[name] = json.loads(result.stdout)

    with DemoEngine(build_results()) as engine:
        configure(ws, engine.base_url)
        text = ws.config_path.read_text(encoding="utf-8")
        ws.config_path.write_text(re.sub(r'(?m)^size = 512$', "size = 128", text), encoding="utf-8")
        for label, term in QUERIES.items():
            assert runner.invoke(app, ["queries", "add", "--label", label, term, *w]).exit_code == 0
        invoke("queries list", "queries", "list", *w)
        invoke("crawl", "crawl", "--limit", "6", *w)
        invoke("engines check", "engines", "check", "--engine", "bing", "--term", next(iter(QUERIES.values())), *w)
        invoke("engines replay", "engines", "replay", str(Path(__file__).parent / "fixtures" / "engines" /
                                                          "bing_async_2026.html"), "--engine", "bing")
        invoke("import", "import", str(demo_dir_module / "obama.jpg"), str(demo_dir_module / "NOTICE.md"), *w)
        invoke("dedup", "dedup", *w)
        invoke("crop", "crop", "--device", "cpu", *w)
        invoke("filter", "filter", *w)
        invoke("export", "export", *w)
        kept = next(r for r in map(json.loads, Path(out["export"]["manifest"]).read_text().splitlines())
                    if r["face_index"] is not None)
        invoke("filter --explain", "filter", "--explain", kept["sample_id"], *w)
        invoke("status", "status", *w)
        invoke("review --list", "review", "--list", *w)
        invoke("review --list --disagree", "review", "--list", "--disagree", *w)
        invoke("review --calibrate", "review", "--calibrate", "5", *w)
        invoke("calibrate", "calibrate", *w)
        invoke("report", "report", "--out", str(root / "report.html"), *w)
        invoke("run", "run", "--device", "cpu", *w)
    tree = root / "labelled"
    for folder, photo in (("keep", "biden.jpg"), ("no_face", "rocket_no_face.jpg")):
        (tree / folder).mkdir(parents=True)
        (tree / folder / photo).write_bytes((demo_dir_module / photo).read_bytes())
    invoke("evaluate", "evaluate", str(tree), "--device", "cpu", "--size", "96")
    return out


@pytest.fixture(scope="module")
def demo_dir_module() -> Path:
    from facecurate.demo import DEMO_DATA

    return DEMO_DATA


@pytest.mark.parametrize("command", list(COMMAND_RECORDS))
def test_each_commands_json_is_its_record(outputs: dict[str, Any], command: str):
    import facecurate.pipeline as pipeline

    for name, cls in _stage_result_names().items():  # resolve the alias the module imports for type checkers
        setattr(pipeline, name, cls)
    data = outputs[command]
    record = TypeAdapter(COMMAND_RECORDS[command]).validate_python(data)
    assert output.jsonable(record) == data  # nothing extra, nothing missing, nothing of another type
    if isinstance(data, dict):
        assert data, command
    assert "failed" not in data or isinstance(data["failed"], list)


def test_the_run_record_nests_each_stages_own_record(outputs: dict[str, Any]):
    stages = {s["name"]: s for s in outputs["run"]["stages"]}
    assert set(stages["crop"]["result"]) == set(outputs["crop"])
    assert set(stages["filter"]["result"]) == set(outputs["filter"])
    assert set(stages["export"]["result"]) == set(outputs["export"])
    crawl = outputs["crawl"]
    assert crawl["found"] == sum(s["counts"]["found"] for s in crawl["searches"]) == 12  # 6 per search
