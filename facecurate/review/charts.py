"""The report's charts: what was rejected and why, drawn by matplotlib as static SVG and inlined in the HTML.

Four kinds, each from one pass over the catalog's items (:meth:`Catalog.chart_rows`):

- rejects by reason x label: horizontal bars, one segment per label (a face with two reasons is in both bars);
- one histogram per rule of the measure it reads, faces the rule fired on stacked over the others, with the
  threshold in force drawn as a line (thresholds come from ``[rules]`` in facecurate.toml, defaults from the
  settings table through the rule registry);
- kept vs rejected per query and over time (the day, or the hour when everything came in one day, each photo
  was added), by state in force: a person's review decisions count.

matplotlib draws through its object API (``Figure``, no pyplot: no GUI backend, no global figure list) into
SVG with text kept as ``<text>`` (escaped by matplotlib's XML writer, so a crawled label stays text); the XML
prologue, namespace declarations and comments are dropped so the SVG sits inline in HTML and the page names
no address at all. Crawled strings are shortened and drawn with mathtext off (``$`` stays a dollar).
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from facecurate.catalog import ChartRow, State
from facecurate.rules.registry import RULES, Rule, select
from facecurate.workspace import Config

Kind = Literal["reasons", "histogram", "queries", "timeline"]

BINS = 40             # histogram bins between the 1st and 99th percentile (widened to take in the threshold)
TOP_QUERIES = 40      # queries drawn one bar each; the rest share one "other" bar (it can outgrow them)
TOP_LABELS = 11       # labels drawn one colour each; the rest share one "other labels" colour
TEXT_CHARS = 40       # crawled strings (labels, queries) are cut to this many characters on a chart
NO_LABEL, NO_QUERY = "(no label)", "(imported, no query)"
# The rules' state of an item, as the reason it left for: rules' reasons for rejects, else the stage's verdict.
LEFT_BY_STAGE = (State.DUPLICATE, State.NO_FACE, State.FAILED)
# State in force → the series of the kept-vs-rejected charts, in stacking order, with its colour.
OUTCOMES: dict[str, str] = {"kept": "#30a46c", "rejected": "#e5484d", "duplicate": "#f5a524",
                            "no face / failed / pending": "#8b8f98"}
_OUTCOME_OF = {State.KEEP: "kept", State.REJECT: "rejected", State.DUPLICATE: "duplicate"}
FIRED, NOT_FIRED, THRESHOLD = "#e5484d", "#5b8def", "#f0f0f0"
SUGGESTED = "#f5a524"  # calibrate's threshold, dotted beside the one in force
_RC: Any = {  # (matplotlib types rc_context's keys as a Literal of every rcParam)
    "svg.fonttype": "none",          # text as <text>, not glyph paths: smaller, selectable, searchable
    "text.parse_math": False,        # labels and queries are crawled text: a "$" is a dollar, not mathtext
    "font.size": 9, "font.family": "DejaVu Sans",
    "figure.facecolor": "#1d2026", "axes.facecolor": "#1d2026", "savefig.facecolor": "#1d2026",
    "axes.edgecolor": "#5a606b", "axes.labelcolor": "#e6e8eb", "text.color": "#e6e8eb",
    "xtick.color": "#b5bac3", "ytick.color": "#b5bac3", "axes.titlesize": 10,
    "legend.frameon": False, "legend.fontsize": 8, "axes.spines.top": False, "axes.spines.right": False,
}
_PALETTE = ("#5b8def", "#f5a524", "#30a46c", "#e5484d", "#a78bfa", "#22d3ee", "#f472b6", "#a3e635",
            "#fb923c", "#94a3b8", "#eab308", "#6b7280")


@dataclass(frozen=True)
class Chart:
    """One chart: its SVG markup (matplotlib's, inlined) and the words around it."""

    id: str                      # unique in the page: the SVG's element ids start with it
    kind: Kind
    title: str
    caption: str
    svg: str = field(repr=False)


@dataclass(frozen=True)
class ChartSet:
    reasons: Chart | None        # None: nothing was rejected
    histograms: list[Chart]      # one per rule whose measure some decided face has
    unmeasured: list[str]        # rules with a threshold but no measured face (disabled, or nothing filtered)
    queries: Chart | None        # None: no items at all
    timeline: Chart | None
    states: dict[str, int]       # items by state in force

    @property
    def all(self) -> list[Chart]:
        return [c for c in (self.reasons, *self.histograms, self.queries, self.timeline) if c is not None]


def text(value: str | None, empty: str) -> str:
    """A crawled string fit for a chart: one line, at most TEXT_CHARS characters (drawn with mathtext off)."""
    s = " ".join((value or "").split()) or empty
    return s if len(s) <= TEXT_CHARS else s[: TEXT_CHARS - 1] + "…"


_FIRES = re.compile(r"\s*\(fires [^)]*\)\s*$")  # the setting's doc ends with what the caption already says
_PROLOGUE = re.compile(r"^.*?(?=<svg[\s>])", re.S)
_NAMESPACES = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')
_COMMENTS = re.compile(r"<!--.*?-->", re.S)


def inline(svg: str) -> str:
    """matplotlib's SVG document as an element for an HTML page: no XML prologue or DOCTYPE, no namespace
    declarations (the HTML parser supplies them), no comments; the drawing itself untouched."""
    body = _COMMENTS.sub("", _PROLOGUE.sub("", svg, count=1))
    head, sep, rest = body.partition(">")
    return _NAMESPACES.sub("", head) + sep + rest


def _render(fig: Any, chart_id: str) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": chart_id}):  # clip-path ids unique per chart, stable per run
        fig.savefig(buf, format="svg", bbox_inches="tight",
                    metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    return inline(buf.getvalue())


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _counts(axis: Any) -> None:
    """Ticks at whole numbers on an axis of counts."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _plain(legend: Any) -> None:
    """Legend entries are labels from the catalog: text, never mathtext."""
    for t in legend.get_texts():
        t.set_parse_math(False)


def _ids(patches: Iterable[Any], prefix: str, start: int = 0) -> int:
    """Element ids on drawn bars (``<prefix>-bar-<n>``), so a test can find them in the page."""
    n = start
    for p in patches:
        p.set_gid(f"{prefix}-bar-{n}")
        n += 1
    return n


def _reason_chart(rows: Sequence[ChartRow]) -> Chart | None:
    """Rejects by reason x label (the rules' verdicts; a person's decisions aside, as the contact sheets)."""
    counts: dict[str, Counter[str]] = {}
    for r in rows:
        if r.rule_state == State.REJECT:
            names = r.reasons or ["(no reason)"]
        elif r.rule_state in LEFT_BY_STAGE:
            names = [r.rule_state.value]
        else:
            continue
        for name in names:
            counts.setdefault(name, Counter())[text(r.label, NO_LABEL)] += 1
    if not counts:
        return None
    reasons = sorted(counts, key=lambda k: (sum(counts[k].values()), k))  # largest at the top
    totals: Counter[str] = Counter()
    for c in counts.values():
        totals.update(c)
    labels = [lab for lab, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))]
    shown, rest = labels[:TOP_LABELS], labels[TOP_LABELS:]
    series = [(lab, [counts[r][lab] for r in reasons]) for lab in shown]
    if rest:
        series.append((f"{len(rest)} other labels", [sum(counts[r][lab] for lab in rest) for r in reasons]))
    fig = _figure(7.6, 0.9 + 0.32 * len(reasons))
    ax = fig.subplots()
    left = np.zeros(len(reasons))
    n = 0
    for (lab, values), colour in zip(series, _PALETTE, strict=False):
        bars = ax.barh(range(len(reasons)), values, left=left, color=colour, label=lab, height=0.7)
        n = _ids(bars, "reasons", n)
        left += np.asarray(values, dtype=float)
    for y, total in enumerate(left):
        ax.text(total, y, f" {int(total)}", va="center", fontsize=8)
    ax.set_yticks(range(len(reasons)), [text(r, "") for r in reasons], parse_math=False)
    ax.set_xlabel("items (a face with two reasons counts in both)")
    _counts(ax.xaxis)
    ax.margins(x=0.08)
    _plain(fig.legend(loc="outside right upper", title="label", title_fontsize=8))
    return Chart("reasons", "reasons", "Rejects by reason and label",
                 "What the rules and stages set aside, per reason, one colour per label.", _render(fig, "reasons"))


def _measures(rows: Sequence[ChartRow], rules: Sequence[Rule]) -> dict[str, tuple[list[float], list[bool]]]:
    """Per rule: the measure of every face the rules decided (kept or rejected), and whether the rule fired."""
    out: dict[str, tuple[list[float], list[bool]]] = {r.name: ([], []) for r in rules}
    for row in rows:
        if not row.face or row.rule_state not in (State.KEEP, State.REJECT):
            continue
        for rule in rules:
            value = row.scores.get(rule.measure)
            if isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value):
                values, fired = out[rule.name]
                values.append(float(value))
                fired.append(rule.name in row.reasons)
    return out


def _histogram(rule: Rule, values: list[float], fired_flags: list[bool], threshold: float, enabled: bool,
               suggested: float | None = None) -> Chart:
    data, fired = np.asarray(values), np.asarray(fired_flags, dtype=bool)
    lo, hi = (float(v) for v in np.percentile(data, [1, 99]))
    lo, hi = min(lo, threshold, suggested if suggested is not None else lo), max(hi, threshold, suggested or hi)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.04
    edges = np.linspace(lo - pad, hi + pad, BINS + 1)
    clipped = np.clip(data, edges[0], edges[-1])  # outliers counted in the edge bins, as the caption says
    others, _ = np.histogram(clipped[~fired], bins=edges)
    hits, _ = np.histogram(clipped[fired], bins=edges)
    cid = f"hist-{rule.name}"
    fig = _figure(3.7, 2.3)
    ax = fig.subplots()
    width = np.diff(edges)
    n = _ids(ax.bar(edges[:-1], others, width=width, align="edge", color=NOT_FIRED, label="not fired",
                    linewidth=0), cid)
    _ids(ax.bar(edges[:-1], hits, width=width, align="edge", bottom=others, color=FIRED, label="fired",
                linewidth=0), cid, n)
    ax.axvline(threshold, color=THRESHOLD, linestyle="--", linewidth=1.4, gid=f"{cid}-threshold",
               label=f"threshold {threshold:g}")
    if suggested is not None:  # calibrate's suggestion from the review decisions, beside the one in force
        ax.axvline(suggested, color=SUGGESTED, linestyle=":", linewidth=1.6, gid=f"{cid}-suggested",
                   label=f"calibrated {suggested:.4g}")
    ax.set_xlabel(rule.measure)
    ax.set_ylabel("faces")
    _counts(ax.yaxis)
    fig.legend(loc="outside upper center", ncols=3, fontsize=7)
    way = "below" if rule.direction == "below" else "at or above"
    state = "" if enabled else " (disabled in [rules] enabled)"
    moved = "" if suggested is None else f" (calibrate suggests {suggested:.4g}, dotted)"
    caption = (f"Fires {way} {threshold:g}{moved}{state} · {len(data)} faces measured, fired on {int(fired.sum())} · "
               f"values outside {edges[0]:.3g}…{edges[-1]:.3g} in the end bins. {_FIRES.sub('', rule.doc)}")
    return Chart(cid, "histogram", f"{rule.name} ({rule.measure})", caption, _render(fig, cid))


def _histograms(rows: Sequence[ChartRow], cfg: Config,
                suggested: Mapping[str, float] | None = None) -> tuple[list[Chart], list[str]]:
    rules = [r for r in RULES if r.family != "image"]  # an image-level reason is a flag, not a measure
    limits = cfg.section("rules")
    try:
        enabled = {r.name for r in select(cfg.get("rules", "enabled"))}
    except ValueError:  # the settings check refuses such a file before a command gets here
        enabled = {r.name for r in RULES}
    measured = _measures(rows, rules)
    charts: list[Chart] = []
    missing: list[str] = []
    for rule in rules:
        values, fired = measured[rule.name]
        if not values:
            missing.append(rule.name)
            continue
        threshold = float(limits.get(rule.name, rule.default))
        charts.append(_histogram(rule, values, fired, threshold, rule.name in enabled,
                                 (suggested or {}).get(rule.name)))
    return charts, missing


def _outcome(state: State) -> str:
    return _OUTCOME_OF.get(state, "no face / failed / pending")


def _stacked(cid: str, kind: Kind, title: str, caption: str, keys: list[str], counts: dict[str, Counter[str]],
             horizontal: bool, xlabel: str) -> Chart:
    """Bars of items per key, one segment per outcome (state in force)."""
    fig = _figure(7.6, 0.9 + 0.26 * len(keys)) if horizontal else _figure(7.6, 2.9)
    ax = fig.subplots()
    base = np.zeros(len(keys))
    n = 0
    for outcome, colour in OUTCOMES.items():
        values = np.asarray([counts[k][outcome] for k in keys], dtype=float)
        if not values.any():
            continue
        if horizontal:
            bars = ax.barh(range(len(keys)), values, left=base, color=colour, label=outcome, height=0.7)
        else:
            bars = ax.bar(range(len(keys)), values, bottom=base, color=colour, label=outcome, width=0.8)
        n = _ids(bars, cid, n)
        base += values
    ticks = list(range(len(keys)))
    if horizontal:
        ax.set_yticks(ticks, keys, parse_math=False)
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
        _counts(ax.xaxis)
    else:
        step = max(1, len(keys) // 24)
        ax.set_xticks(ticks[::step], keys[::step], rotation=45 if len(keys) > 6 else 0, ha="right"
                      if len(keys) > 6 else "center")
        ax.set_ylabel("items")
        _counts(ax.yaxis)
        ax.set_xlabel(xlabel)
    fig.legend(loc="outside upper left", ncols=len(OUTCOMES))
    return Chart(cid, kind, title, caption, _render(fig, cid))


def _query_chart(rows: Sequence[ChartRow]) -> Chart | None:
    counts: dict[str, Counter[str]] = {}
    for r in rows:
        counts.setdefault(text(r.query, NO_QUERY), Counter())[_outcome(r.state)] += 1
    if not counts:
        return None
    keys = sorted(counts, key=lambda k: (-sum(counts[k].values()), k))
    if len(keys) > TOP_QUERIES:
        other: Counter[str] = Counter()
        for k in keys[TOP_QUERIES - 1:]:
            other.update(counts.pop(k))
        name = f"{len(keys) - TOP_QUERIES + 1} other queries"
        keys = [*keys[: TOP_QUERIES - 1], name]
        counts[name] = other
    return _stacked("queries", "queries", "Kept and rejected per query",
                    "Items by the search term that first brought their photo (largest first), state in force: "
                    "review decisions included.", keys, counts, True, "items")


def _timeline_chart(rows: Sequence[ChartRow]) -> Chart | None:
    if not rows:
        return None
    days = {r.added_at[:10] for r in rows}
    hourly = len(days) == 1
    counts: dict[str, Counter[str]] = {}
    for r in rows:
        key = f"{r.added_at[5:10]} {r.added_at[11:13]}h" if hourly else r.added_at[:10]
        counts.setdefault(key, Counter())[_outcome(r.state)] += 1
    keys = sorted(counts)
    unit = "hour" if hourly else "day"
    return _stacked("timeline", "timeline", f"Kept and rejected over time (per {unit} added, UTC)",
                    f"Items by the {unit} their photo entered the workspace (crawled or imported), state in force.",
                    keys, counts, False, f"{unit} added (UTC)")


def build_charts(rows: Iterable[ChartRow], cfg: Config, suggested: Mapping[str, float] | None = None) -> ChartSet:
    """Every chart of the report from the catalog's items and the settings in force; ``suggested``: thresholds
    ``calibrate`` would set (rule -> value), drawn beside the ones in force."""
    import matplotlib

    items = list(rows)
    with matplotlib.rc_context(_RC):
        histograms, missing = _histograms(items, cfg, suggested)
        return ChartSet(reasons=_reason_chart(items), histograms=histograms, unmeasured=missing,
                        queries=_query_chart(items), timeline=_timeline_chart(items),
                        states=dict(Counter(r.state.value for r in items).most_common()))
