"""The layers of DESIGN.md §2 hold: SQL only in the catalog, Rich and printing only in the output layer and the
CLI, imports only downward, every option default from the settings table."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

import facecurate

PACKAGE = Path(facecurate.__file__).parent

# Lower number = lower layer. A module may import only from its own layer's module tree or lower layers.
LAYERS: list[tuple[int, str]] = [
    (1, "facecurate.errors"), (1, "facecurate.events"), (1, "facecurate.workspace"), (1, "facecurate.media"),
    (1, "facecurate.storage"), (1, "facecurate.filestore"), (1, "facecurate.catalog"), (1, "facecurate.device"),
    (1, "facecurate.work"), (1, "facecurate.result_arrow"),
    (2, "facecurate.dedup.core"), (2, "facecurate.dedup.search"), (2, "facecurate.dedup.groups"),
    (2, "facecurate.dedup.hashing"), (2, "facecurate.dedup.decode"), (2, "facecurate.dedup.verify"),
    (2, "facecurate.dedup.sharded"),
    (2, "facecurate.faces.detect"), (2, "facecurate.faces.align"), (2, "facecurate.faces.mtcnn_nets"),
    (2, "facecurate.faces.align_torch"),
    (2, "facecurate.rules.measure"), (2, "facecurate.rules.geometry"), (2, "facecurate.rules.pixels"),
    (2, "facecurate.rules.eyes"), (2, "facecurate.rules.registry"), (2, "facecurate.rules.fitting"),
    (2, "facecurate.crawl.engines"), (2, "facecurate.crawl.http"), (2, "facecurate.crawl.urls"),
    # a loopback server and image edits: neither reads the catalog or the workspace
    (2, "facecurate.demo_engine"), (2, "facecurate.demo_variants"),
    (3, "facecurate.ingest"), (3, "facecurate.crawl"), (3, "facecurate.dedup"), (3, "facecurate.faces"),
    (3, "facecurate.rules"), (3, "facecurate.review"), (3, "facecurate.export"),
    (4, "facecurate.pipeline"), (4, "facecurate.evaluate"), (4, "facecurate.calibrate"),
    (4, "facecurate.demo"), (4, "facecurate.executors"),
    (5, "facecurate.api"), (5, "facecurate.output"), (5, "facecurate"),
    (6, "facecurate.cli"), (6, "facecurate.__main__"), (6, "facecurate.review.server"),
]


def _layer(module: str) -> tuple[int, str]:
    """The most specific entry naming ``module`` or a package above it."""
    best: tuple[int, str] | None = None
    for layer, name in LAYERS:
        inside = module == name or (module.startswith(name + ".") and name != "facecurate")
        if inside and (best is None or len(name) > len(best[1])):
            best = (layer, name)
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and to DESIGN.md)"
    return best


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append((".".join(parts), path))
    return out


def _imports(module: str, path: Path) -> list[str]:
    """Every facecurate module imported, at module level or inside functions (lazy imports count too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:  # `from facecurate.crawl import stage` imports a submodule
                sub = f"{target}.{alias.name}"
                found.append(sub if any(m == sub for m, _ in _modules()) else target)
    return [m for m in found if m == "facecurate" or m.startswith("facecurate.")]


def test_every_import_points_down_or_within_its_own_part():
    wrong = []
    for module, path in _modules():
        layer, home = _layer(module)
        for target in _imports(module, path):
            if target == "facecurate":
                target = "facecurate"  # only __version__ is imported from the package root below layer 5
                if layer < 5 and "import __version__" not in path.read_text(encoding="utf-8"):
                    wrong.append(f"{module} (layer {layer}) imports the facecurate package")
                continue
            t_layer, t_home = _layer(target)
            same_part = target == home or target.startswith(home + ".") or home.startswith(t_home)
            builds_on_run = layer == 4 and t_home == "facecurate.pipeline"  # demo and evaluate drive `run`
            builds_on_run |= layer == 4 and t_home == "facecurate.executors"  # orchestration picks where work runs
            if t_layer > layer or (t_layer == layer and not same_part and layer in (3, 4) and not builds_on_run):
                wrong.append(f"{module} (layer {layer}) imports {target} (layer {t_layer})")
    assert not wrong, "\n".join(wrong)


# Lazy imports that close a cycle on purpose, each with its reason. crop.run_crop hands a run to the torch
# pipeline, which is built from crop's own decode, retry and commit helpers so that both pipelines mean the same
# thing in the catalog; moving those helpers out of crop.py would remove this entry.
DELIBERATE_CYCLES = {("facecurate.faces.crop", "facecurate.faces.crop_device")}


def test_no_import_cycles_between_modules():
    graph = {m: set(_imports(m, p)) - {t for s, t in DELIBERATE_CYCLES if s == m} for m, p in _modules()}
    names = set(graph)
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if nxt not in names or nxt == node or node.startswith(nxt + ".") or nxt == "facecurate":
                continue  # a package's own __init__ re-exporting from its children is not a cycle
            if state.get(nxt) == 1:
                cycle.extend([*stack, node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, [*stack, node]):
                return True
        state[node] = 2
        return False

    for m in sorted(names):
        if state.get(m) is None and visit(m, []):
            break
    assert not cycle, " -> ".join(cycle)


def _source_lines(pattern: str, allowed: re.Pattern[str]) -> list[str]:
    rx = re.compile(pattern)
    hits = []
    for module, path in _modules():
        if allowed.match(module):
            continue
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if rx.search(line):
                hits.append(f"{path.relative_to(PACKAGE.parent)}:{no}: {line.strip()}")
    return hits


def test_sql_only_in_the_catalog():
    hits = _source_lines(r"\.(execute|executemany|executescript)\(", re.compile(r"^facecurate\.catalog(\.|$)"))
    assert not hits, "\n".join(hits)


def test_rich_and_printing_only_in_the_output_layer_and_the_cli():
    allowed = re.compile(r"^facecurate\.(output|cli|__main__)$")
    hits = _source_lines(r"^\s*(from rich|import rich)", allowed) + _source_lines(r"^\s*print\(", allowed)
    assert not hits, "\n".join(hits)


OPTION_RECORDS = [("facecurate.dedup", "DedupOptions", "dedup"), ("facecurate.faces.crop", "CropOptions", "crop"),
                  ("facecurate.export", "ExportOptions", "export"), ("facecurate.crawl.http", "HttpSettings", "crawl"),
                  ("facecurate.crawl.engines.base", "BrowserSettings", "crawl")]


@pytest.mark.parametrize("module,name,section", OPTION_RECORDS, ids=[r[1] for r in OPTION_RECORDS])
def test_option_records_take_every_default_from_the_settings_table(module: str, name: str, section: str,
                                                                   tmp_path: Path):
    import importlib

    from facecurate.workspace import SETTINGS, Workspace, init_workspace, setting

    cls = getattr(importlib.import_module(module), name)
    ws: Workspace = init_workspace(tmp_path / "ws")
    opts = cls.from_config(ws)  # type: ignore[attr-defined]
    for f in dataclasses.fields(opts):
        assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, \
            f"{cls.__name__}.{f.name} restates a default: take it from the settings table"
        assert getattr(opts, f.name) == setting(section, f.name).default, f"{cls.__name__}.{f.name}"
    assert {f.name for f in dataclasses.fields(opts)} <= {s.key for s in SETTINGS if s.section == section}


def test_the_config_is_parsed_once_per_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from typer.testing import CliRunner

    from facecurate import workspace
    from facecurate.cli import app

    ws = workspace.init_workspace(tmp_path / "ws")
    parses = []
    real = workspace.Config.load.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(workspace.Config, "load", classmethod(lambda cls, p: parses.append(p) or real(cls, p)))
    workspace._load_config.cache_clear()
    result = CliRunner().invoke(app, ["filter", "--workspace", str(ws.root), "--json"])
    assert result.exit_code == 0, result.output
    assert len(parses) == 1
