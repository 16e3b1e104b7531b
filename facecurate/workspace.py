"""Workspace discovery, paths and ``facecurate.toml``.

Every default lives in SETTINGS, once, with the one-line reason a user reads in the generated
``facecurate.toml``; the rest of the code reads values through :class:`Config` and never repeats a default.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facecurate.errors import ConfigError, WorkspaceError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CONFIG_NAME = "facecurate.toml"
CATALOG_NAME = "facecurate.db"
ENV_VAR = "FACECURATE_WORKSPACE"


@dataclass(frozen=True)
class Setting:
    section: str
    key: str
    default: Any
    doc: str
    choices: tuple[str, ...] = ()


SETTINGS: tuple[Setting, ...] = (
    Setting("media", "max_pixels", 100_000_000,
            "Images above this many pixels are refused as decompression bombs (100 MP covers any camera)."),
    Setting("media", "max_bytes", 64 * 1024 * 1024,
            "Files larger than this are refused before decoding, so one odd file cannot exhaust memory."),
    Setting("media", "min_side", 32,
            "Images whose shorter side is below this are refused: too small to hold a usable face."),
    Setting("crop", "size", 512, "Side of the square aligned crop in pixels (FFHQ uses 1024)."),
    Setting("crop", "device", "auto", "auto uses CUDA when torch sees it, else the CPU.",
            ("auto", "cpu", "cuda")),
    Setting("crop", "batch_size", 32, "Images per MTCNN batch; larger batches keep a GPU busy."),
    Setting("crop", "detect_max_side", 1024,
            "Photos are downscaled to this long side for detection only; crops come from the full image."),
    Setting("crop", "min_face_size", 20, "Smallest face MTCNN looks for, in detection pixels."),
    Setting("crop", "min_prob", 0.9, "Detections below this MTCNN probability are not treated as faces."),
    Setting("crop", "headroom", 0.0,
            "Widen the FFHQ square upwards by this share of its half-size (0 = FFHQ exactly)."),
    Setting("crop", "padding", "reflect_blur",
            "How pixels outside the photo are filled: FFHQ's reflect+blur+fade, or black.",
            ("reflect_blur", "constant")),
    Setting("crop", "all_faces", False, "Crop every confident face instead of only the largest one."),
    Setting("crop", "image_format", "jpg", "File format of the crops.", ("jpg", "png")),
    Setting("crop", "jpeg_quality", 95, "JPEG quality of the crops when image_format is jpg."),
    Setting("export", "format", "jsonl", "Manifest format.", ("jsonl", "csv", "parquet")),
    Setting("export", "val_fraction", 0.0,
            "Share of kept faces put in the validation split (0 = everything in train)."),
    Setting("export", "seed", 0, "Seed of the train/validation split, so exports are reproducible."),
)


def default_config() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for s in SETTINGS:
        out.setdefault(s.section, {})[s.key] = s.default
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 10_000 else str(value)
    return repr(value)


def render_default_toml() -> str:
    """The commented facecurate.toml that ``init`` writes: every setting, its default and why."""
    lines = ["# facecurate workspace settings. Every value shown is the default; edit to change it.", ""]
    section = None
    for s in SETTINGS:
        if s.section != section:
            if section is not None:
                lines.append("")
            lines.append(f"[{s.section}]")
            section = s.section
        choices = f" One of: {', '.join(s.choices)}." if s.choices else ""
        lines.append(f"# {s.doc}{choices}")
        lines.append(f"{s.key} = {_toml_value(s.default)}")
    return "\n".join(lines) + "\n"


class Config:
    """Settings of one workspace: the defaults overlaid with facecurate.toml, type-checked."""

    def __init__(self, values: dict[str, dict[str, Any]]) -> None:
        self._values = values

    @classmethod
    def load(cls, path: Path) -> Config:
        values = default_config()
        if not path.exists():
            return cls(values)
        try:
            user = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML ({exc}). Fix the line it names, or move the "
                              f"file away and run `facecurate init` to write a fresh one.") from exc
        known = {(s.section, s.key): s for s in SETTINGS}
        for section, table in user.items():
            if not isinstance(table, dict):
                continue
            for key, value in table.items():
                setting = known.get((section, key))
                if setting is None:  # sections owned by later stages (rules, engines) pass through
                    values.setdefault(section, {})[key] = value
                    continue
                values[section][key] = _check(setting, value, path)
        return cls(values)

    def get(self, section: str, key: str) -> Any:
        return self._values[section][key]

    def section(self, section: str) -> dict[str, Any]:
        return dict(self._values.get(section, {}))

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in self._values.items()}


def _check(setting: Setting, value: Any, path: Path) -> Any:
    expected = type(setting.default)
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"{path}: [{setting.section}] {setting.key} = {value!r} should be a "
                          f"{expected.__name__} (default {setting.default!r}).")
    if setting.choices and value not in setting.choices:
        raise ConfigError(f"{path}: [{setting.section}] {setting.key} = {value!r} is not one of "
                          f"{', '.join(setting.choices)}.")
    return value


@dataclass(frozen=True)
class Workspace:
    """A folder holding facecurate.toml, the catalog and the content-addressed files."""

    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def catalog_path(self) -> Path:
        return self.root / CATALOG_NAME

    @property
    def raw_dir(self) -> Path:
        return self.root / "raw"

    @property
    def crops_dir(self) -> Path:
        return self.root / "crops"

    @property
    def queries_dir(self) -> Path:
        return self.root / "queries"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @property
    def tmp_dir(self) -> Path:
        """Temp files live inside the workspace so the final rename never crosses filesystems."""
        return self.root / ".tmp"

    def config(self) -> Config:
        return Config.load(self.config_path)

    def resolve(self, relative: str) -> Path:
        return self.root / relative


def init_workspace(directory: Path) -> Workspace:
    """Create (or complete) a workspace; an existing facecurate.toml is never overwritten."""
    ws = Workspace(directory.resolve())
    if ws.root.exists() and not ws.root.is_dir():
        raise WorkspaceError(f"{ws.root} exists and is not a folder; choose another path for the workspace.")
    for d in (ws.root, ws.raw_dir, ws.crops_dir, ws.queries_dir, ws.tmp_dir):
        d.mkdir(parents=True, exist_ok=True)
    if not ws.config_path.exists():
        ws.config_path.write_text(render_default_toml(), encoding="utf-8")
    from facecurate.catalog import Catalog  # the catalog creates and migrates its schema on open

    Catalog.open(ws.catalog_path).close()
    return ws


def find_workspace(explicit: Path | None = None, cwd: Path | None = None) -> Workspace:
    """--workspace, then $FACECURATE_WORKSPACE, then the current folder or one of its parents."""
    if explicit is not None:
        candidates, origin = [explicit], "--workspace"
    elif os.environ.get(ENV_VAR):
        candidates, origin = [Path(os.environ[ENV_VAR])], f"${ENV_VAR}"
    else:
        here = (cwd or Path.cwd()).resolve()
        candidates, origin = [here, *here.parents], "the current folder"
    for c in candidates:
        if (c / CONFIG_NAME).is_file():
            return Workspace(c.resolve())
    raise WorkspaceError(f"No facecurate workspace at {candidates[0]} (from {origin}): it has no {CONFIG_NAME}. "
                         f"Create one with `facecurate init DIR`, then run commands inside DIR or pass "
                         f"--workspace DIR (or set {ENV_VAR}).")
