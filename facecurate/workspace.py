"""Workspace discovery, paths and ``facecurate.toml``.

Every default lives in SETTINGS, once, with the one-line reason a user reads in the generated
``facecurate.toml``; the rest of the code reads values through :class:`Config` and never repeats a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
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
# Written into every export folder; export replaces such a folder's contents and import never walks into one.
EXPORT_MARKER = ".facecurate-export"
# A workspace's folders of images it made itself (originals it stored, crops, exports): never imported again.
OWN_IMAGE_DIRS = ("raw", "crops", "exports")
ENV_VAR = "FACECURATE_WORKSPACE"


@dataclass(frozen=True)
class Setting:
    """One row of the settings table. Its type is its default's type; ``min``/``max`` bound numbers (inclusive;
    ``above`` makes ``min`` exclusive, for values that must be positive but may be fractional), ``choices``
    lists the words a string may be, ``items`` the words a comma-list string may hold. Everything is checked
    when facecurate.toml is read, so a bad value stops a command before any stage starts rather than deep
    inside one."""

    section: str
    key: str
    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    above: bool = False
    items: tuple[str, ...] = ()  # a comma list: each of its words must be one of these
    pattern: str = ""  # a regular expression a string must match whole; ``pattern_text`` says it in words
    pattern_text: str = ""

    def range_text(self) -> str:
        """The accepted range in words, for error messages and the generated facecurate.toml."""
        low = None if self.min is None else f"{'above' if self.above else 'at least'} {_num(self.min)}"
        high = None if self.max is None else f"at most {_num(self.max)}"
        return " and ".join(t for t in (low, high) if t)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


_BROWSER_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 "
               "Safari/537.36")

# Crawl politeness and robustness. Image downloads always carry facecurate's own User-Agent with the contact;
# search pages of engines that refuse non-browser agents (bing, duckduckgo, naver) carry search_user_agent.
CRAWL_SETTINGS: tuple[Setting, ...] = (
    Setting("crawl", "engines", "bing",
            "Engines `crawl` uses without --engine, comma-separated; a term is pending until each one ran it.",
            items=("bing", "duckduckgo", "google", "google-browser", "naver", "wikimedia")),
    Setting("crawl", "limit", 300, "Search results taken per (query, engine); Bing stops near 1,000 anyway.", min=1),
    Setting("crawl", "contact", "",
            "Your e-mail or URL, sent in the User-Agent so site owners can reach you (Wikimedia requires one)."),
    Setting("crawl", "search_user_agent", _BROWSER_UA,
            "User-Agent for search result pages: Bing, DuckDuckGo and Naver answer only browser-like agents."),
    Setting("crawl", "concurrency", 16, "Download threads in total; the per-host cap keeps each host polite.",
            min=1, max=256),
    Setting("crawl", "processes", 0,
            "Worker processes that decode, hash and write downloaded images (requests stay in the crawl's own "
            "process, so the per-host caps hold across them); 0: two per CPU core, 1: none, threads only.",
            min=0, max=64),
    Setting("crawl", "per_host", 4, "Simultaneous requests to one host at most.", min=1, max=256),
    Setting("crawl", "per_host_rate", 8.0, "Requests per second to one host at most (request starts are spaced).",
            min=0),
    Setting("crawl", "connect_timeout", 5.0, "Seconds to open a connection before the attempt counts as a timeout.",
            min=0, above=True, max=3600),
    Setting("crawl", "read_timeout", 15.0, "Seconds of silence from a server before the attempt times out.",
            min=0, above=True, max=3600),
    Setting("crawl", "total_timeout", 60.0,
            "Seconds one URL may take in all: connect, status line, headers and body of every attempt and the waits "
            "between them; a trickling server is cut off here (too_slow, not retried).",
            min=0, above=True, max=86400),
    Setting("crawl", "retries", 3, "Extra attempts after a timeout, a dropped connection, 429 or 5xx.", min=0, max=20),
    Setting("crawl", "backoff", 0.5, "First retry delay in seconds; it doubles each attempt, with random jitter.",
            min=0, max=3600),
    Setting("crawl", "backoff_max", 30.0, "Longest delay between two attempts, in seconds.", min=0, max=3600),
    Setting("crawl", "retry_after_max", 120.0,
            "A Retry-After longer than this many seconds gives up on the URL (recorded as rate_limited).",
            min=0, max=86400),
    Setting("crawl", "max_bytes", 25 * 1024 * 1024,
            "Byte cap per downloaded image: bigger bodies are cut off and recorded as too_large.", min=1),
    Setting("crawl", "max_redirects", 5, "Redirects followed per URL; more is recorded as a redirect loop.",
            min=0, max=50),
    Setting("crawl", "page_delay", 1.0, "Seconds between two result pages of one engine, to stay under its radar.",
            min=0, max=3600),
    Setting("crawl", "empty_pages", 2, "Stop a query after this many result pages in a row that bring nothing new.",
            min=1),
    Setting("crawl", "chromium", "/usr/bin/chromium", "Chromium binary the google engine drives (Debian path)."),
    Setting("crawl", "chromedriver", "/usr/bin/chromedriver",
            "chromedriver matching that Chromium; given explicitly so Selenium never tries to download one."),
    Setting("crawl", "browser_timeout", 10.0, "Seconds the google engine waits for a page or a full-size image.",
            min=0, above=True, max=3600),
    Setting("crawl", "scroll_wait", 1.5,
            "Seconds the google engine waits for the grid to grow after a scroll before it calls the end.",
            min=0, max=3600),
    Setting("crawl", "allow_private", False,
            "Fetch images from loopback, private, link-local and reserved addresses too (an intranet mirror, "
            "tests); off, a result or redirect pointing inside a network is refused as blocked_address. Engine "
            "base_url hosts are always allowed."),
    Setting("engines.bing", "base_url", "https://www.bing.com", "Bing host (a mirror or a test server may stand in)."),
    Setting("engines.bing", "face_only", True,
            "Ask Bing for face pictures only (qft=+filterui:face-face): fewer crops without a face to reject."),
    Setting("engines.bing", "size", "", "Bing's size filter (empty: any size).",
            ("", "small", "medium", "large", "wallpaper")),
    Setting("engines.bing", "license", "", "Bing's licence filter (empty: any licence; see docs/engines.md).",
            ("", "public_domain", "share", "share_commercially", "modify", "modify_commercially")),
    Setting("engines.duckduckgo", "base_url", "https://duckduckgo.com", "DuckDuckGo host."),
    Setting("engines.duckduckgo", "region", "us-en", "DuckDuckGo region (l= and its cookies), e.g. us-en, kr-kr."),
    Setting("engines.google", "base_url", "https://www.google.com",
            "Google host, asked over plain HTTP with a feature-phone agent (the /imgres answer)."),
    Setting("engines.google", "face_only", False,
            "Add tbs=itp:face (Google's face filter); off by default: unverified on the feature-phone page."),
    Setting("engines.google-browser", "base_url", "https://www.google.com",
            "Google host, driven in headless Chromium (the slower fallback when the plain-HTTP path is blocked)."),
    Setting("engines.google-browser", "face_only", False, "Add tbs=itp:face (Google's face filter)."),
    Setting("engines.naver", "base_url", "https://search.naver.com", "Naver search host."),
    Setting("engines.wikimedia", "base_url", "https://commons.wikimedia.org", "Wikimedia Commons API host."),
    Setting("engines.wikimedia", "thumb_width", 2048,
            "Download Commons' thumbnail of this width (px) instead of the multi-megabyte original; 0: originals.",
            min=0, max=8192),
    Setting("engines.wikimedia", "category", "",
            "Only files in this Commons category, e.g. Portrait photographs (searched as incategory:)."),
    Setting("engines.wikimedia", "download_hosts", "upload.wikimedia.org",
            "Hosts of Commons' files, comma-separated; downloads from them obey the two caps below."),
    Setting("engines.wikimedia", "per_host", 2,
            "Simultaneous downloads from each download host (Wikimedia's robot policy allows 2).", min=1, max=2),
    Setting("engines.wikimedia", "per_host_rate", 4.0, "Requests per second to each download host at most.",
            min=0, above=True, max=8),
)

SETTINGS: tuple[Setting, ...] = (
    Setting("media", "max_pixels", 100_000_000,
            "Images above this many pixels are refused as decompression bombs (100 MP covers any camera).", min=1),
    Setting("media", "max_bytes", 64 * 1024 * 1024,
            "Files larger than this are refused before decoding, so one odd file cannot exhaust memory.", min=1),
    Setting("media", "min_side", 32,
            "Images whose shorter side is below this are refused: too small to hold a usable face.", min=1),
    Setting("media", "decode_budget", 128.0,
            "Megapixels one stage may hold decoded at once across its threads and processes; a larger image "
            "is decoded alone. Peak memory grows ~3-7 bytes per pixel (128: well under 1.5 GB per stage).",
            min=1, max=100_000),
    Setting("dedup", "algorithm", "phash",
            "Perceptual hash (imagehash, 64 bits); pHash survives resizing, recompression and brightness best.",
            ("phash", "dhash", "ahash", "whash")),
    Setting("dedup", "threshold", 8,
            "Hash bits (of 64) within which two photos are near-duplicate candidates; 8 catches resizes, JPEG "
            "q30, watermarks and mirrors, and keeps a million-photo search near a minute.", min=0, max=64),
    Setting("dedup", "min_similarity", 0.93,
            "Aligned correlation of 24-px thumbnails that confirms a candidate (copies score 0.94+, different "
            "aligned faces up to ~0.92); 0 trusts the hash alone.", min=0, max=1),
    Setting("dedup", "crop_window", 0.95,
            "Also hash four windows of this share per side (a 2x2 grid of placements), so copies trimmed ~5%, "
            "evenly or all off one side, match; 0 turns them off.", min=0, max=1),
    Setting("dedup", "crop_threshold", 6,
            "Hash bits within which a photo matches one of another photo's crop windows (pHash distances are "
            "even: 6 and 7 are the same); never looser than threshold, as each photo has eight window hashes.",
            min=0, max=64),
    Setting("dedup", "keeper", "resolution,jpeg_quality,bytes,sharpness",
            "Which copy is kept: criteria in order from resolution, jpeg_quality, bytes, sharpness, first_seen; "
            "remaining ties go to the smaller sha256."),
    Setting("dedup", "faces", True,
            "After crop, also group the aligned face crops: the same face re-posted with a new border or caption."),
    Setting("dedup", "face_threshold", 8, "Hash bits within which two aligned face crops are candidates.",
            min=0, max=64),
    Setting("dedup", "face_min_similarity", 0.95,
            "Thumbnail correlation that confirms two face crops: aligned faces all look alike, so ask more.",
            min=0, max=1),
    Setting("dedup", "shard_above", 1_000_000,
            "Photos (or face crops) past which the hash search runs in shards of shard_entries hashes: one "
            "piece needs ~0.7 GB and ~46 s per million photos; the shards find the same pairs (docs/scale.md).",
            min=0),
    Setting("dedup", "shard_entries", 4_000_000,
            "Hashes one search shard holds at most (a photo has up to ten, and is one query); a worker peaked at "
            "0.56 GB with 4M (2M photos, bench_dedup_scale.py --sharded).", min=1000),
    Setting("crop", "size", 512, "Side of the square aligned crop in pixels (FFHQ uses 1024).", min=16, max=8192),
    Setting("crop", "device", "auto", "auto uses CUDA when torch sees it, else the CPU.",
            ("auto", "cpu", "cuda")),
    Setting("crop", "batch_size", 32, "Images per MTCNN batch; larger batches keep a GPU busy.", min=1, max=4096),
    Setting("crop", "detect_max_side", 1024,
            "Photos are downscaled to this long side for detection only; crops come from the full image.", min=32),
    Setting("crop", "min_face_size", 40,
            "Face size MTCNN's pyramid starts at, in detection pixels (photo pixels up to detect_max_side); "
            "it still finds some faces down to about half of it. A 40 px face would be enlarged ~8x into a "
            "512 crop, which the small_face rule rejects past 2x, and each halving of this size makes detection "
            "~2x slower; lower it for small crops of small faces.", min=1),
    Setting("crop", "min_prob", 0.9, "Detections below this MTCNN probability are not treated as faces.", min=0, max=1),
    Setting("crop", "headroom", 0.0,
            "Widen the FFHQ square upwards by this share of its half-size (0 = FFHQ exactly).", min=0, max=2),
    Setting("crop", "padding", "reflect_blur",
            "How pixels outside the photo are filled: FFHQ's reflect+blur+fade, or black.",
            ("reflect_blur", "constant")),
    Setting("crop", "alignment", "default",
            "Resampling of the aligned crop: default (Lanczos shrink, rotation at 2x, as sharp as FFHQ's, ~5x "
            "faster) or ffhq (the published script's pixels: quad + 0.5, 4x transform, its padding trigger and "
            "median).", ("default", "ffhq")),
    Setting("crop", "all_faces", False, "Crop every confident face instead of only the largest one."),
    Setting("crop", "pipeline", "auto",
            "Which code cuts the crops: opencv (Pillow/OpenCV on CPU threads), torch (faces/crop_device.py: "
            "JPEG decode on the GPU, alignment as tensor ops on the device, the same torch code on a CPU) or "
            "auto (torch when the device is CUDA, opencv otherwise). Both agree within a grey level.",
            ("auto", "opencv", "torch")),
    Setting("crop", "device_batch_size", 0,
            "Photos per batch in the torch pipeline; 0 sizes it from the GPU's free memory (on a CPU: "
            "batch_size).", min=0, max=4096),
    Setting("crop", "image_format", "jpg", "File format of the crops.", ("jpg", "png")),
    Setting("crop", "jpeg_quality", 95, "JPEG quality of the crops when image_format is jpg.", min=1, max=100),
    Setting("crop", "workers", 0,
            "Worker processes that decode, align and write crops beside the detector; 0 = automatic (three "
            "quarters of the usable cores and at least two, the rest to MTCNN's threads; none for a handful of "
            "photos or one core).", min=0, max=256),
    Setting("run", "executor", "local",
            "Where the heavy stages' batches run: local (this machine's threads and processes) or ray (a Ray "
            "cluster; needs the ray extra: `uv sync --extra ray`).", ("local", "ray")),
    Setting("run", "ray_address", "",
            "Ray cluster to join: empty starts one on this machine (or joins RAY_ADDRESS), auto finds a running "
            "one, ray://host:10001 a remote one (its nodes must see the workspace at the same path)."),
    Setting("run", "storage", "",
            "Where raw/ and crops/ live for every stage's workers: empty = this workspace's folders; an absolute "
            "path = a folder every node mounts; an fsspec URL (s3://bucket/prefix; needs the ray extra, which "
            "brings s3fs) = object storage. The workspace's folders then mirror it, filled on demand.",
            pattern=r"(|/.*|[A-Za-z][A-Za-z0-9+.-]*://.+)",
            pattern_text="empty, an absolute path, or a URL such as s3://bucket/prefix"),
    Setting("run", "ray_workers", 0,
            "Ray workers (actors) per stage; 0: one per CPU the cluster has (one per GPU for crop on GPUs).",
            min=0, max=100_000),
    Setting("run", "ray_gpus_per_worker", 1.0,
            "GPUs each crop worker holds when the cluster has GPUs (0.5 puts two workers on one GPU).",
            min=0, max=8, above=True),
    Setting("export", "format", "jsonl", "Manifest format.", ("jsonl", "csv", "parquet")),
    Setting("export", "layout", "imagefolder",
            "Dataset layout `export` and `run` write, each in its own folder under exports/: imagefolder (Hugging "
            "Face: exports/imagefolder/, train/ + val/ with metadata.parquet and a dataset card), per-label "
            "(exports/per-label/: train/LABEL/, val/LABEL/, StarGAN v2 domains), cyclegan (exports/cyclegan/: "
            "trainA/ trainB/ testA/ testB/, exactly two labels) or none (the manifest alone, in exports/).",
            ("none", "imagefolder", "per-label", "cyclegan")),
    Setting("export", "val_fraction", 0.1,
            "Share of each label's kept faces put in the validation split (0 = everything in train, unless "
            "min_val_per_label asks for some).", min=0, max=1),
    Setting("export", "min_val_per_label", 2,
            "Validation faces each label gets at least, as long as one stays in train: StarGAN v2 and CycleGAN "
            "need a val/test folder per domain, so per-label and cyclegan apply it even at val_fraction 0; the "
            "other layouts when val_fraction > 0 (0 = no minimum).", min=0),
    Setting("export", "seed", 0, "Seed of the train/validation split, so exports are reproducible.",
            min=0, max=2**32 - 1),
    Setting("export", "licenses", "",
            "Licence families the layouts carry, comma-separated (empty = all): a kept face whose source licence "
            "is in another family stays out of the dataset (the manifest and the card say so). `unknown` is the "
            "family of imports and of results without a licence.",
            items=("cc0", "pd", "cc-by", "cc-by-sa", "cc-by-nc", "cc-by-nd", "cc-by-nc-sa", "cc-by-nc-nd", "gfdl",
                   "other", "unknown")),
    Setting("review", "host", "127.0.0.1",
            "Interface the review gallery listens on: any loopback address as is; another needs --allow-remote "
            "(then a secret key in the printed URL and a Host allow-list)."),
    Setting("review", "port", 8377, "Port of the review gallery; taken means a free one is picked (0: always).",
            min=0, max=65535),
    Setting("review", "reviewer", "", "Name written with each review decision; empty means the login name."),
    Setting("review", "thumb_size", 160, "Side of the gallery thumbnails in pixels (cached under .cache/review).",
            min=16, max=2048),
    Setting("review", "report_limit", 200,
            "Faces shown per reason in `report` and `review --html` (0 = all); the counts and charts always cover "
            "every face.", min=0),
    Setting("review", "report_file", "report.html",
            "Where `facecurate report` writes its HTML (charts and contact sheets); relative to the workspace."),
    Setting("evaluate", "target_precision", 0.95,
            "Precision a threshold `evaluate` suggests must reach on the labelled folders (then the best recall).",
            min=0, max=1),
    Setting("evaluate", "crop_size", 256,
            "Crop size `evaluate` measures the rules at: small enough to be quick, large enough for the eye rules.",
            min=16, max=8192),
    Setting("calibrate", "target_precision", 0.0,
            "Precision a threshold `calibrate` suggests must reach on the review decisions (then the best recall); "
            "0 picks the threshold agreeing with the most decisions.", min=0, max=1),
    Setting("calibrate", "min_decisions", 20,
            "Decisions a rule needs (among faces it could judge) before `calibrate` trusts its suggestion and "
            "the gallery calls calibration worth running.", min=1),
    Setting("calibrate", "label_min_decisions", 30,
            "Decisions a label needs before `calibrate` fits that label's own thresholds ([rules.<label>]).",
            min=1),
    Setting("calibrate", "bootstrap", 1000,
            "Bootstrap resamples behind each precision/recall interval (0: no interval).", min=0, max=100_000),
    Setting("calibrate", "random_share", 0.1,
            "Share of the `review --calibrate` queue drawn at random, so the error overall is estimated honestly "
            "and not only near the thresholds.", min=0, max=1),
    Setting("calibrate", "seed", 0, "Seed of that random share, so the queue is reproducible.", min=0,
            max=2**32 - 1),
    *CRAWL_SETTINGS,
)


def _threshold(rule: str, default: float, fires: Literal["below", "at or above"], doc: str,
               lowest: float | None = 0.0) -> Setting:
    """One rule's threshold; ``fires`` ("below" or "at or above") must match the rule's direction in
    facecurate.rules.registry (tests/test_rules.py checks it), so the line in facecurate.toml tells the truth.
    Every measure is a share, a ratio or a variance, never negative, so neither is a threshold (``lowest``);
    there is no upper bound, as a threshold past every measure is how one rule is made to never or always fire."""
    return Setting("rules", rule, default, f"{doc} (fires {fires} this)", min=lowest)


# Every rule's threshold, read by the rule registry (facecurate.rules.registry) as its default and its doc.
_RULE_THRESHOLDS: tuple[Setting, ...] = (
    _threshold("closed_eyes", 0.18, "below",
               "Mean FaceMesh eye aspect ratio of both eyes below this: eyes shut (open eyes read 0.22-0.39)."),
    _threshold("wink", 0.18, "below",
               "One eye's aspect ratio below this while the other is open (seen by the eye cascade, or read "
               "wide): a wink."),
    _threshold("occluded_eyes", 1.0, "at or above",
               "Eyes the landmarks call open but no eye is visible (Haar eye cascade finds none centred on "
               "either landmark eye; skin breaks ties), or no face for FaceMesh at all: sunglasses, bangs, hands."),
    _threshold("mirroring", 0.08, "at or above",
               "Share of the crop filled by reflect padding beside or below the face (smeared hair and skin)."),
    _threshold("no_headroom", 0.0, "below",
               "Estimated top of the skull (1.8 eye-to-mouth distances above the eyes) this many eye distances "
               "inside the photo's top edge; below 0 the head is cut.", lowest=None),
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

RULE_SETTINGS: tuple[Setting, ...] = (
    Setting("rules", "enabled", "all", "Rules that may reject a face: all, or a comma list of names.",
            items=("all", "no_face", *(t.key for t in _RULE_THRESHOLDS))),  # no_face: set by crop, no threshold
    *_RULE_THRESHOLDS,
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
    lines = ["# facecurate workspace settings. Every value shown is the default; edit to change it.",
             "# Every command checks this file first: a value out of its range, or a section or key not listed",
             "# here (a typo), stops the command with the line to fix. A line left out keeps its default.", ""]
    section = None
    for s in SETTINGS:
        if s.section != section:
            if section is not None:
                lines.append("")
            lines.append(f"[{s.section}]")
            section = s.section
        choices = f" One of: {', '.join(s.choices)}." if s.choices else ""
        if s.items:
            choices += f" Names: {', '.join(s.items)}."
        if s.range_text():
            choices += f" Range: {s.range_text()}."
        lines.append(f"# {s.doc}{choices}")
        lines.append(f"{s.key} = {_toml_value(s.default)}")
        if s.section == "rules" and s is RULE_SETTINGS[-1]:
            lines += ["", "# Thresholds for one label's faces only go in a section of their own, e.g.",
                      "# [rules.makeup]", "# closed_eyes = 0.15"]
    return "\n".join(lines) + "\n"


class Config:
    """Settings of one workspace: the defaults overlaid with facecurate.toml, every value checked.

    The settings table defines the whole file: a section or key it does not list is refused (with the closest
    name it does list), not passed through, because a typo silently falling back to the default is the worst
    outcome a setting can have. ``[engines.<name>]`` holds ``base_url`` and that engine's own filters and caps
    (the rows the table lists for it), for the engines the table names;
    ``[rules]`` holds each rule's threshold (the registry's names) and ``enabled``; ``[rules.<label>]`` (any
    label, e.g. ``[rules.makeup]``) holds thresholds for that label's faces only, each checked like its
    ``[rules]`` row (``calibrate --apply`` writes them when a label has enough decisions of its own)."""

    def __init__(self, values: dict[str, dict[str, Any]], labels: dict[str, dict[str, float]] | None = None) -> None:
        self._values = values
        self._labels = labels or {}

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
        user, label_tables = _split_label_rules(user, path)
        labels = {label: {key: _check(_label_rule(label, key, path), value, path) for key, value in table.items()}
                  for label, table in label_tables.items()}
        for section, table in _retire(_flatten_engines(user, path), path).items():
            if not isinstance(table, dict):
                raise ConfigError(_key_outside_sections(section, table, path))
            if section not in values:
                raise ConfigError(_unknown_section(section, path))
            for key, value in table.items():
                setting = known.get((section, key))
                if setting is None:
                    raise ConfigError(_unknown_key(section, key, path))
                values[section][key] = _check(setting, value, path)
        return cls(values, labels)

    def rule_thresholds(self, label: str | None = None) -> dict[str, float]:
        """Every rule's threshold for faces of ``label``: ``[rules]`` overlaid with ``[rules.<label>]``."""
        out = {k: float(v) for k, v in self._values["rules"].items() if k != "enabled"}
        out.update(self._labels.get(label or "", {}) if label else {})
        return out

    def rule_labels(self) -> dict[str, dict[str, float]]:
        """The ``[rules.<label>]`` sections: label -> the thresholds it sets (only those)."""
        return {k: dict(v) for k, v in self._labels.items()}

    def get(self, section: str, key: str) -> Any:
        return self._values[section][key]

    def section(self, section: str) -> dict[str, Any]:
        return dict(self._values.get(section, {}))

    def engine(self, name: str) -> dict[str, Any]:
        """``[engines.<name>]``, the defaults overlaid with the user's values (checked when read)."""
        return dict(self._values.get(f"engines.{name}", {}))

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in self._values.items()}


def _split_label_rules(user: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """TOML nests ``[rules.makeup]`` inside ``[rules]`` as a table: take those out as per-label thresholds."""
    rules = user.get("rules")
    if not isinstance(rules, dict):
        return user, {}
    labels = {k: v for k, v in rules.items() if isinstance(v, dict)}
    if not labels:
        return user, {}
    for label in labels:
        if not label.strip():
            raise ConfigError(f"{path}: [rules.\"{label}\"] names no label: write [rules.<label>] with a label "
                              f"your queries or imports use.")
    return {**user, "rules": {k: v for k, v in rules.items() if k not in labels}}, labels


def _label_rule(label: str, key: str, path: Path) -> Setting:
    """The ``[rules]`` row a ``[rules.<label>]`` key overrides; only thresholds can be set per label."""
    thresholds = [s.key for s in RULE_SETTINGS if s.key != "enabled"]
    if key not in thresholds:
        raise ConfigError(f"{path}: [rules.{label}] has no setting {key!r}.{_suggest(key, thresholds)} A label's "
                          f"section holds rule thresholds only: {', '.join(thresholds)}.")
    return setting("rules", key)


def _flatten_engines(user: dict[str, Any], path: Path) -> dict[str, Any]:
    """TOML nests ``[engines.bing]`` as ``engines = {bing = {...}}``; the table spells it ``engines.bing``."""
    out = {k: v for k, v in user.items() if k != "engines"}
    engines = user.get("engines", {})
    if not isinstance(engines, dict):
        raise ConfigError(f"{path}: engines = {engines!r} is not a section: write each engine's host as "
                          f"[engines.<name>] followed by base_url = \"https://...\".")
    for name, table in engines.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [engines] {name} = {table!r} is not an engine's section: write it as "
                              f"[engines.{name}] followed by base_url = \"https://...\".")
        out[f"engines.{name}"] = table
    return out


# Settings that were merged into another: (section, key) -> (the value `init` used to write, the setting now in
# charge). A line holding the old written default is skipped (init wrote it, nobody chose it); another value is
# refused with where it lives now, so a choice the user made is never silently dropped.
RETIRED: dict[tuple[str, str], tuple[Any, str]] = {
    ("run", "layout"): ("imagefolder", "[export] layout (run and export now share it)"),
}


def _retire(user: dict[str, Any], path: Path) -> dict[str, Any]:
    """``user`` without its retired lines (see RETIRED); a section left empty by them goes too."""
    out = {}
    for section, table in user.items():
        retired = [key for (old, key) in RETIRED if old == section and isinstance(table, dict) and key in table]
        if retired:
            table = dict(table)
            for key in retired:
                value = table.pop(key)
                written, now = RETIRED[(section, key)]
                if value != written:
                    raise ConfigError(f"{path}: [{section}] {key} = {value!r} is retired: it is {now}. Move the "
                                      f"value there and delete the line.")
            if not table and section not in _sections():
                continue
        out[section] = table
    return out


def _sections() -> list[str]:
    return list(dict.fromkeys(s.section for s in SETTINGS))


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" Did you mean {close[0]}?" if close else ""


def _unknown_section(section: str, path: Path) -> str:
    """A section the table does not define: name the closest one, or the section a lone key belongs to."""
    sections = _sections()
    hint = _suggest(f"[{section}]", [f"[{s}]" for s in sections])
    owners = [s.section for s in SETTINGS if s.key == section]
    if owners:
        hint = f" {section} is a setting of [{owners[0]}]: put it under that header."
    return (f"{path}: [{section}] is not a facecurate section.{hint} The sections are "
            f"{', '.join(f'[{s}]' for s in sections)}; `facecurate init` in a new folder writes every one, "
            f"documented.")


def _key_outside_sections(key: str, value: Any, path: Path) -> str:
    """``key = value`` above the first header: every setting lives in a section, so say which one."""
    owners = {s.key: s.section for s in SETTINGS}
    close = difflib.get_close_matches(key, list(owners), n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]} in [{owners[close[0]]}]?" if close else ""
    return (f"{path}: {key} = {value!r} stands outside any [section], and facecurate.toml has no such "
            f"top-level setting.{hint} Put each setting under its section's header, e.g. [crawl].")


def _unknown_key(section: str, key: str, path: Path) -> str:
    """A key its section does not have: the closest key of that section, else the section that has it."""
    keys = [s.key for s in SETTINGS if s.section == section]
    hint = _suggest(key, keys)
    if not hint:
        owners = [s.section for s in SETTINGS if s.key == key]
        if owners:
            hint = f" {key} is a setting of [{owners[0]}]: move it under that header."
    listed = "" if hint else f" Its settings are {', '.join(keys)}."
    return (f"{path}: [{section}] has no setting {key!r}.{hint}{listed} Fix the name or delete the line (a "
            f"setting left out keeps its default).")


def _check(setting: Setting, value: Any, path: Path | str) -> Any:
    """One value against its row: type (an int is accepted for a float), finiteness, range, choices."""
    where = f"{path}: [{setting.section}] {setting.key} = {value!r}"
    expected = type(setting.default)
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"{where} should be a {_type_name(expected)} (default {_toml_value(setting.default)}).")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} should be a finite number (default {_toml_value(setting.default)}).")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = setting.min, setting.max
        if ((low is not None and (value <= low if setting.above else value < low))
                or (high is not None and value > high)):
            raise ConfigError(f"{where} is out of range: it must be {setting.range_text()} (default "
                              f"{_toml_value(setting.default)}). Fix the value, or delete the line to use the "
                              f"default.")
    if setting.choices and value not in setting.choices:
        hint = _suggest(str(value), list(setting.choices))
        raise ConfigError(f"{where} is not one of {', '.join(setting.choices)}.{hint}")
    if setting.pattern and not re.fullmatch(setting.pattern, str(value).strip()):
        raise ConfigError(f"{where} is not {setting.pattern_text} (default {_toml_value(setting.default)}).")
    words = [w.strip() for w in str(value).split(",")] if setting.items else []
    unknown = [w for w in words if w and w.lower() not in setting.items]
    if unknown:
        hint = _suggest(unknown[0].lower(), list(setting.items))
        raise ConfigError(f"{where} names {', '.join(map(repr, unknown))}, which is not one of "
                          f"{', '.join(setting.items)}.{hint} Write a comma-separated list of those names.")
    return value


def _type_name(kind: type) -> str:
    return {bool: "boolean (true or false)", int: "whole number", float: "number", str: "string in quotes"}.get(
        kind, kind.__name__)


@functools.lru_cache(maxsize=16)
def _load_config(path: Path, stamp: tuple[int, int] | None) -> Config:
    return Config.load(path)


def setting(section: str, key: str) -> Setting:
    for s in SETTINGS:
        if s.section == section and s.key == key:
            return s
    raise KeyError(f"no setting [{section}] {key}")


def check_value(section: str, key: str, value: Any, flag: str) -> Any:
    """A command-line value of a setting (``review --port``), held to the table's type and range as the file is."""
    return _check(setting(section, key), value, f"the command line ({flag})")


def check_setting(section: str, key: str, value: Any, where: str) -> Any:
    """A value of a setting given somewhere else than facecurate.toml (a query's own ``limit=``), held to the
    table's row; ``where`` names the place for the error message."""
    return _check(setting(section, key), value, where)


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
    rows = {s.key: s for s in SETTINGS if s.section == section}
    values.update({k: _check(rows[k], v, "the command line") if k in rows else v
                   for k, v in overrides.items() if v is not None})
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


_BARE_KEY = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def _header(label: str | None) -> str:
    if label is None:
        return "[rules]"
    return f"[rules.{label}]" if set(label) <= _BARE_KEY else f"[rules.{_toml_value(label)}]"


def write_thresholds(ws: Workspace, changes: dict[str | None, dict[str, float]], note: str) -> Path:
    """Set rule thresholds in facecurate.toml (label None: ``[rules]``, else ``[rules.<label>]``), keeping every
    other line and comment as it was, with ``note`` in a dated comment beside each value changed. The old file is
    kept as ``facecurate.toml.YYYYMMDD-HHMMSS.bak``; the new text is checked as every command checks the file
    before it replaces the old one, so a failed write leaves the settings untouched. Returns the backup's path."""
    import re
    import shutil
    from datetime import datetime

    path = ws.config_path
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = text.splitlines()
    stamp = datetime.now().astimezone()
    day = stamp.strftime("%Y-%m-%d %H:%M")
    current = Config.load(path)
    for label, values in changes.items():
        header = _header(label)
        alt = {header, header.replace(" ", "")}
        if label is not None:
            alt |= {f"[rules.{_toml_value(label)}]", f"[rules.'{label}']"}
        start = next((i for i, ln in enumerate(lines) if ln.strip() in alt), None)
        if start is None:
            lines += ["", header]
            start = len(lines) - 1
        end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
        lines.insert(start + 1, f"# calibrate {day}: {note}")
        end += 1
        for key, value in values.items():
            old = current.rule_thresholds(label).get(key)
            line = f"{key} = {value!r}  # calibrate {day}, was {old!r}"
            pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
            found = next((i for i in range(start + 1, end) if pattern.match(lines[i])), None)
            if found is None:
                lines.insert(end, line)
                end += 1
            else:
                lines[found] = line
    new_text = "\n".join(lines) + "\n"
    trial = ws.tmp_dir / f"{CONFIG_NAME}.check"
    ws.tmp_dir.mkdir(parents=True, exist_ok=True)
    trial.write_text(new_text, encoding="utf-8")
    try:
        Config.load(trial)
    finally:
        trial.unlink(missing_ok=True)
    backup = path.with_name(f"{CONFIG_NAME}.{stamp.strftime('%Y%m%d-%H%M%S')}.bak")
    n = 1
    while backup.exists():
        backup = path.with_name(f"{CONFIG_NAME}.{stamp.strftime('%Y%m%d-%H%M%S')}-{n}.bak")
        n += 1
    if path.exists():
        shutil.copy2(path, backup)
    part = path.with_name(path.name + ".part")
    part.write_text(new_text, encoding="utf-8")
    os.replace(part, path)
    return backup


def init_workspace(directory: Path) -> Workspace:
    """Create (or complete) a workspace; an existing facecurate.toml is never overwritten, and is checked
    before anything is created, as every command checks it. The only place a missing catalog is created."""
    ws = Workspace(directory.resolve())
    if ws.root.exists() and not ws.root.is_dir():
        raise WorkspaceError(f"{ws.root} exists and is not a folder; choose another path for the workspace.")
    if ws.config_path.exists():
        ws.config()
    for d in (ws.root, ws.raw_dir, ws.crops_dir, ws.queries_dir, ws.tmp_dir):
        d.mkdir(parents=True, exist_ok=True)
    if not ws.config_path.exists():
        ws.config_path.write_text(render_default_toml(), encoding="utf-8")
    from facecurate.catalog import Catalog  # the catalog creates and migrates its schema on open

    Catalog.open(ws.catalog_path, create=True).close()
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
