"""Workspace discovery, paths and ``facecurate.toml``.

Every default lives in SETTINGS, once, with the one-line reason a user reads in the generated
``facecurate.toml``; the rest of the code reads values through :class:`Config` and never repeats a default.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from facecurate.errors import ConfigError, WorkspaceError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

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


_BROWSER_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 "
               "Safari/537.36")

# Crawl politeness and robustness. Image downloads always carry facecurate's own User-Agent with the contact;
# search pages of engines that refuse non-browser agents (bing, duckduckgo, naver) carry search_user_agent.
CRAWL_SETTINGS: tuple[Setting, ...] = (
    Setting("crawl", "engines", "bing",
            "Engines `crawl` uses without --engine, comma-separated; a term is pending until each one ran it."),
    Setting("crawl", "limit", 300, "Search results taken per (query, engine); Bing stops near 1,000 anyway."),
    Setting("crawl", "contact", "",
            "Your e-mail or URL, sent in the User-Agent so site owners can reach you (Wikimedia requires one)."),
    Setting("crawl", "search_user_agent", _BROWSER_UA,
            "User-Agent for search result pages: Bing, DuckDuckGo and Naver answer only browser-like agents."),
    Setting("crawl", "concurrency", 16, "Download threads in total; the per-host cap keeps each host polite."),
    Setting("crawl", "per_host", 4, "Simultaneous requests to one host at most."),
    Setting("crawl", "per_host_rate", 8.0, "Requests per second to one host at most (request starts are spaced)."),
    Setting("crawl", "connect_timeout", 5.0, "Seconds to open a connection before the attempt counts as a timeout."),
    Setting("crawl", "read_timeout", 15.0, "Seconds of silence from a server before the attempt times out."),
    Setting("crawl", "total_timeout", 60.0, "Seconds for a whole body: a server trickling bytes cannot hold a thread."),
    Setting("crawl", "retries", 3, "Extra attempts after a timeout, a dropped connection, 429 or 5xx."),
    Setting("crawl", "backoff", 0.5, "First retry delay in seconds; it doubles each attempt, with random jitter."),
    Setting("crawl", "backoff_max", 30.0, "Longest delay between two attempts, in seconds."),
    Setting("crawl", "retry_after_max", 120.0,
            "A Retry-After longer than this many seconds gives up on the URL (recorded as rate_limited)."),
    Setting("crawl", "max_bytes", 25 * 1024 * 1024,
            "Byte cap per downloaded image: bigger bodies are cut off and recorded as too_large."),
    Setting("crawl", "max_redirects", 5, "Redirects followed per URL; more is recorded as a redirect loop."),
    Setting("crawl", "page_delay", 1.0, "Seconds between two result pages of one engine, to stay under its radar."),
    Setting("crawl", "empty_pages", 2, "Stop a query after this many result pages in a row that bring nothing new."),
    Setting("crawl", "chromium", "/usr/bin/chromium", "Chromium binary the google engine drives (Debian path)."),
    Setting("crawl", "chromedriver", "/usr/bin/chromedriver",
            "chromedriver matching that Chromium; given explicitly so Selenium never tries to download one."),
    Setting("crawl", "browser_timeout", 10.0, "Seconds the google engine waits for a page or a full-size image."),
    Setting("crawl", "scroll_wait", 1.5,
            "Seconds the google engine waits for the grid to grow after a scroll before it calls the end."),
    Setting("engines.bing", "base_url", "https://www.bing.com", "Bing host (a mirror or a test server may stand in)."),
    Setting("engines.duckduckgo", "base_url", "https://duckduckgo.com", "DuckDuckGo host."),
    Setting("engines.google", "base_url", "https://www.google.com", "Google host, driven in headless Chromium."),
    Setting("engines.naver", "base_url", "https://search.naver.com", "Naver search host."),
    Setting("engines.wikimedia", "base_url", "https://commons.wikimedia.org", "Wikimedia Commons API host."),
)

SETTINGS: tuple[Setting, ...] = (
    Setting("media", "max_pixels", 100_000_000,
            "Images above this many pixels are refused as decompression bombs (100 MP covers any camera)."),
    Setting("media", "max_bytes", 64 * 1024 * 1024,
            "Files larger than this are refused before decoding, so one odd file cannot exhaust memory."),
    Setting("media", "min_side", 32,
            "Images whose shorter side is below this are refused: too small to hold a usable face."),
    Setting("dedup", "algorithm", "phash",
            "Perceptual hash (imagehash, 64 bits); pHash survives resizing, recompression and brightness best.",
            ("phash", "dhash", "ahash", "whash")),
    Setting("dedup", "threshold", 8,
            "Hash bits (of 64) within which two photos are near-duplicate candidates; 8 catches resizes, JPEG "
            "q30, watermarks and mirrors, and keeps a million-photo search near a minute."),
    Setting("dedup", "min_similarity", 0.93,
            "Aligned correlation of 24-px thumbnails that confirms a candidate (copies score 0.94+, different "
            "aligned faces up to ~0.92); 0 trusts the hash alone."),
    Setting("dedup", "crop_window", 0.95,
            "Also hash four windows of this share per side (a 2x2 grid of placements), so copies trimmed ~5%, "
            "evenly or all off one side, match; 0 turns them off."),
    Setting("dedup", "crop_threshold", 6,
            "Hash bits within which a photo matches one of another photo's crop windows (pHash distances are "
            "even: 6 and 7 are the same); never looser than threshold, as each photo has eight window hashes."),
    Setting("dedup", "keeper", "resolution,jpeg_quality,bytes,sharpness",
            "Which copy is kept: criteria in order from resolution, jpeg_quality, bytes, sharpness, first_seen; "
            "remaining ties go to the smaller sha256."),
    Setting("dedup", "faces", True,
            "After crop, also group the aligned face crops: the same face re-posted with a new border or caption."),
    Setting("dedup", "face_threshold", 8, "Hash bits within which two aligned face crops are candidates."),
    Setting("dedup", "face_min_similarity", 0.95,
            "Thumbnail correlation that confirms two face crops: aligned faces all look alike, so ask more."),
    Setting("crop", "size", 512, "Side of the square aligned crop in pixels (FFHQ uses 1024)."),
    Setting("crop", "device", "auto", "auto uses CUDA when torch sees it, else the CPU.",
            ("auto", "cpu", "cuda")),
    Setting("crop", "batch_size", 32, "Images per MTCNN batch; larger batches keep a GPU busy."),
    Setting("crop", "detect_max_side", 1024,
            "Photos are downscaled to this long side for detection only; crops come from the full image."),
    Setting("crop", "min_face_size", 40,
            "Face size MTCNN's pyramid starts at, in detection pixels (photo pixels up to detect_max_side); "
            "it still finds some faces down to about half of it. A 40 px face would be enlarged ~8x into a "
            "512 crop, which the small_face rule rejects past 2x, and each halving of this size makes detection "
            "~2x slower; lower it for small crops of small faces."),
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
    Setting("export", "layout", "none",
            "Dataset layout `export` writes beside the manifest: none, imagefolder (Hugging Face: train/ + "
            "metadata.jsonl) or per-label (train/LABEL/, val/LABEL/: StarGAN v2 domains).",
            ("none", "imagefolder", "per-label")),
    Setting("export", "val_fraction", 0.0,
            "Share of kept faces put in the validation split (0 = everything in train)."),
    Setting("export", "seed", 0, "Seed of the train/validation split, so exports are reproducible."),
    Setting("run", "layout", "imagefolder",
            "Dataset layout `run` exports at its end (the same choices as [export] layout).",
            ("none", "imagefolder", "per-label")),
    Setting("review", "host", "127.0.0.1",
            "Interface the review gallery listens on; anything but 127.0.0.1 lets other machines see it."),
    Setting("review", "port", 8377, "Port of the review gallery; taken means a free one is picked (0: always)."),
    Setting("review", "reviewer", "", "Name written with each review decision; empty means the login name."),
    Setting("review", "thumb_size", 160, "Side of the gallery thumbnails in pixels (cached under .cache/review)."),
    Setting("review", "report_limit", 200,
            "Faces shown per reason in `review --html` (0 = all); the counts always cover every face."),
    Setting("evaluate", "target_precision", 0.95,
            "Precision a threshold `evaluate` suggests must reach on the labelled folders (then the best recall)."),
    Setting("evaluate", "crop_size", 256,
            "Crop size `evaluate` measures the rules at: small enough to be quick, large enough for the eye rules."),
    *CRAWL_SETTINGS,
)


def _threshold(rule: str, default: float, fires: Literal["below", "at or above"], doc: str) -> Setting:
    """One rule's threshold; ``fires`` ("below" or "at or above") must match the rule's direction in
    facecurate.rules.registry (tests/test_rules.py checks it), so the line in facecurate.toml tells the truth."""
    return Setting("rules", rule, default, f"{doc} (fires {fires} this)")


# Every rule's threshold, read by the rule registry (facecurate.rules.registry) as its default and its doc.
RULE_SETTINGS: tuple[Setting, ...] = (
    Setting("rules", "enabled", "all", "Rules that may reject a face: all, or a comma list of names."),
    _threshold("closed_eyes", 0.18, "below",
               "Mean FaceMesh eye aspect ratio of both eyes below this: eyes shut (open eyes read 0.22-0.39)."),
    _threshold("wink", 0.18, "below",
               "One eye's aspect ratio below this while the other is open (seen by the eye cascade, or read "
               "wide): a wink."),
    _threshold("occluded_eyes", 1.0, "at or above",
               "Eyes the landmarks call open but no eye is visible (Haar eye cascade finds none; skin breaks "
               "ties): sunglasses, bangs, hands."),
    _threshold("mirroring", 0.08, "at or above",
               "Share of the crop filled by reflect padding beside or below the face (smeared hair and skin)."),
    _threshold("no_headroom", 0.0, "below",
               "Estimated top of the skull (1.8 eye-to-mouth distances above the eyes) this many eye distances "
               "inside the photo's top edge; below 0 the head is cut."),
    _threshold("small_face", 2.0, "at or above",
               "The crop would enlarge the photo more than this factor: too little real detail."),
    _threshold("extreme_pose", 1.0, "at or above",
               "Yaw ~60°, strong pitch or a face lying sideways (1.0 = the extreme on the worst axis)."),
    _threshold("multiple_faces", 0.5, "at or above",
               "Another confident face at least this fraction as wide stands next to the main one."),
    _threshold("product_shot", 0.01, "below",
               "First heuristic: the face covers under this share of a colourful frame (ads, packshots)."),
    _threshold("blurry", 6.0, "below",
               "Variance of the Laplacian of the face, read at the photo's own resolution, below this: out of "
               "focus."),
    _threshold("grayscale", 3.0, "below",
               "Mean per-pixel colour spread below this many levels: a black-and-white photo."),
)

SETTINGS = SETTINGS + RULE_SETTINGS


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

    def engine(self, name: str) -> dict[str, Any]:
        """``[engines.<name>]``: TOML nests it under ``engines``, so user values pass through there and are
        overlaid here on the defaults of the ``engines.<name>`` settings (type-checked like the rest)."""
        out = dict(self._values.get(f"engines.{name}", {}))
        user = self._values.get("engines", {}).get(name, {})
        known = {s.key: s for s in SETTINGS if s.section == f"engines.{name}"}
        for key, value in (user if isinstance(user, dict) else {}).items():
            out[key] = _check(known[key], value, Path(CONFIG_NAME)) if key in known else value
        return out

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


@functools.lru_cache(maxsize=16)
def _load_config(path: Path, stamp: tuple[int, int] | None) -> Config:
    return Config.load(path)


def setting(section: str, key: str) -> Setting:
    for s in SETTINGS:
        if s.section == section and s.key == key:
            return s
    raise KeyError(f"no setting [{section}] {key}")


def check_choice(section: str, key: str, value: str, flag: str) -> str:
    """A command-line value of a setting with choices (``--device``, ``--format``), checked against the table."""
    choices = setting(section, key).choices
    if value not in choices:
        raise ConfigError(f"Unknown {flag} value {value!r}: use {', '.join(choices)}.")
    return value


OptionsT = TypeVar("OptionsT", bound="DataclassInstance")


def options_from(cls: type[OptionsT], cfg: Config, section: str, **overrides: Any) -> OptionsT:
    """An options record from one settings section: every field is a setting of ``section`` (the table holds its
    default), and an override of None means "not given on the command line"."""
    values = cfg.section(section)
    values.update({k: v for k, v in overrides.items() if v is not None})
    fields = [f.name for f in dataclasses.fields(cls)]
    return cls(**{k: values[k] for k in fields})


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
        """The settings, parsed once per command (again only when the file changed since)."""
        try:
            st = self.config_path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        return _load_config(self.config_path, stamp)

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
