"""`facecurate report` and `review --html`: one builder, charts drawn by matplotlib and inlined as SVG, a contact
sheet per reason, crawled strings kept as text, and nothing fetched from anywhere.

The browser test opens the file in headless Chromium (Debian's chromium + chromedriver), checks every chart is
there and has drawn something (bars with an area, the threshold line on each histogram), reads the network
log, and saves a screenshot beside the report in the test's tmp_path."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from facecurate.catalog import Catalog, ChartRow, State
from facecurate.cli import app
from facecurate.review.charts import build_charts, inline, text
from facecurate.workspace import Workspace
from tests.test_review_support import chromium, image_id_of, require_chromium, reviewed_workspace

runner = CliRunner()
LABEL_XSS = "<script>alert(1)</script>"
QUERY_MATH = "obama $5 {\\bf x} $"  # an odd number of dollars: mathtext would fail on it
# The rules whose measures the reviewed workspace holds (tests/test_review_support.py VERDICTS).
MEASURED = ("closed_eyes", "mirroring", "no_headroom")


@pytest.fixture
def rws(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Workspace:
    """The reviewed demo workspace, one photo under a hostile label and one under a query full of dollars."""
    ws = reviewed_workspace(tmp_path_factory, tmp_path / "ws")
    with Catalog.open(ws.catalog_path) as cat, cat.transaction():
        bad = image_id_of(cat, "obama3.jpg")  # a closed_eyes reject: the label shows in the reasons chart
        cat.conn.execute("UPDATE images SET label=? WHERE id=?", (LABEL_XSS, bad))
        cat.conn.execute("UPDATE sources SET query=? WHERE image_id=?", (QUERY_MATH, image_id_of(cat, "biden.jpg")))
    return ws


def _set_threshold(ws: Workspace, rule: str, value: float) -> None:
    body = ws.config_path.read_text(encoding="utf-8")
    body, n = re.subn(rf"(?m)^{rule} = .*$", f"{rule} = {value}", body)
    assert n == 1
    ws.config_path.write_text(body, encoding="utf-8")


class _Urls(HTMLParser):
    """Every attribute that names a resource, and every inline CSS url()."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "action", "srcset", "poster", "data") and value is not None:
                self.refs.append((tag, name, value))
            if name == "style" and value and "url(" in value:
                self.refs += [(tag, "style", u) for u in re.findall(r"url\(([^)]*)\)", value)]


def test_report_is_self_contained_escaped_and_shared_with_review_html(rws: Workspace, tmp_path: Path):
    out = tmp_path / "out" / "report.html"
    res = runner.invoke(app, ["report", "--out", str(out), "-w", str(rws.root), "--json"])
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    html = out.read_text(encoding="utf-8")
    assert record["size_bytes"] == len(html.encode("utf-8")) and record["path"] == str(out)
    # reasons x label, one histogram per measured rule, per query, over time; a sheet per reason group
    assert record["charts"] == 3 + len(MEASURED) and record["sheets"] == 4
    assert record["thumbnails"] == 4  # one face is in two sheets

    parser = _Urls()
    parser.feed(html)
    wrong = [r for r in parser.refs if not (r[2].startswith(("data:image/", "#")))]
    assert not wrong, wrong  # thumbnails as data: URIs, in-page anchors and SVG references only
    assert not re.search(r"https?:", html, re.I)  # not even an SVG namespace or DOCTYPE address
    assert "<script" not in html.lower().replace("&lt;script", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the label, as text, in the chart's legend
    assert "obama $5 {\\bf x} $" in html  # dollars and backslashes drawn as they are: no mathtext, no crash
    assert "<?xml" not in html and "<!DOCTYPE svg" not in html and "<!--" not in html
    for rule in MEASURED:
        assert f'id="hist-{rule}-threshold"' in html
    for reason in ("mirroring", "no_headroom", "closed_eyes", "no_face"):
        assert f">{reason} <small>" in html  # its contact sheet

    # review --html writes the same page (one builder): equal but for the minute it was made
    again = tmp_path / "review.html"
    assert runner.invoke(app, ["review", "--html", str(again), "-w", str(rws.root)]).exit_code == 0

    def strip(page: str) -> str:
        return re.sub(r"made \S+ by", "made - by", page)

    assert strip(again.read_text(encoding="utf-8")) == strip(html)

    # the default place is the setting's, inside the workspace
    assert runner.invoke(app, ["report", "-w", str(rws.root)]).exit_code == 0
    assert (rws.root / "report.html").is_file()


def test_thresholds_drawn_are_the_settings_in_force(rws: Workspace):
    _set_threshold(rws, "mirroring", 0.2)
    with Catalog.open(rws.catalog_path) as cat:
        charts = build_charts(cat.chart_rows(), rws.config())
    hist = {c.id: c for c in charts.histograms}
    assert set(hist) == {f"hist-{r}" for r in MEASURED}
    assert "Fires at or above 0.2 " in hist["hist-mirroring"].caption
    assert "Fires below 0.18 " in hist["hist-closed_eyes"].caption  # untouched: the settings table's default
    assert "fired on 2" in hist["hist-mirroring"].caption  # the stored verdicts, not re-decided by the report
    assert charts.unmeasured and "blurry" in charts.unmeasured


def test_charts_with_nothing_filtered_and_an_empty_catalog(tmp_path: Path):
    from facecurate.workspace import init_workspace

    ws = init_workspace(tmp_path / "empty")
    res = runner.invoke(app, ["report", "-w", str(ws.root), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["charts"] == 0
    html = (ws.root / "report.html").read_text(encoding="utf-8")
    assert "Nothing was rejected." in html and "run <code>facecurate filter</code>" in html

    rows = [ChartRow(True, State.PENDING, State.PENDING, [], {}, "a", None, "2026-01-02T03:04:05+00:00")]
    charts = build_charts(rows, ws.config())
    assert charts.reasons is None and charts.histograms == [] and charts.queries and charts.timeline
    assert "per hour" in charts.timeline.title  # everything arrived in one day


def test_inline_svg_and_chart_text():
    svg = ('<?xml version="1.0"?>\n<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN"\n "http://www.w3.org/x.dtd">\n'
           '<svg xmlns:xlink="http://www.w3.org/1999/xlink" width="1pt" xmlns="http://www.w3.org/2000/svg">'
           '<!-- a <b> -->\n<path d="M 0 0"/></svg>\n')
    assert inline(svg) == '<svg width="1pt">\n<path d="M 0 0"/></svg>\n'
    assert text("  two\n lines ", "-") == "two lines" and text(None, "(none)") == "(none)"
    assert text("$x$", "") == "$x$" and len(text("x" * 100, "")) == 40


def _js(driver: Any, script: str) -> Any:
    return driver.execute_script(script)


def test_report_charts_draw_in_headless_chromium_and_fetch_nothing(rws: Workspace, tmp_path: Path):
    require_chromium()
    out = tmp_path / "report.html"
    assert runner.invoke(app, ["report", "--out", str(out), "-w", str(rws.root)]).exit_code == 0
    with chromium(1400, 900, logs=True) as driver:
        driver.get(out.as_uri())
        # every chart is an inline SVG with drawn bars: a path with an area, as laid out by the browser
        bars = _js(driver, """
            const out = {};
            for (const fig of document.querySelectorAll('figure.chart')) {
              const svg = fig.querySelector('svg');
              const paths = [...fig.querySelectorAll('g[id*="-bar-"] path')];
              out[fig.id] = {svg: !!svg && svg.getBoundingClientRect().width > 100,
                             bars: paths.filter(p => { const b = p.getBBox(); return b.width > 0 && b.height > 0; })
                                        .length};
            }
            return out;""")
        expected = {"chart-reasons", "chart-queries", "chart-timeline", *(f"chart-hist-{r}" for r in MEASURED)}
        assert set(bars) == expected
        assert all(b["svg"] and b["bars"] > 0 for b in bars.values()), bars
        for rule in MEASURED:  # the threshold line: a drawn vertical segment inside its histogram's plot
            line = _js(driver, f"""
                const g = document.getElementById('hist-{rule}-threshold');
                const p = g && g.querySelector('path');
                if (!p) return null;
                const b = p.getBBox();
                return {{width: b.width, height: b.height, dashed: getComputedStyle(p).strokeDasharray}};""")
            assert line and line["height"] > 20 and line["width"] < 1 and line["dashed"] != "none", (rule, line)
        # contact sheets: one grid per reason, its thumbnails decoded
        sheets = _js(driver, """
            return Object.fromEntries([...document.querySelectorAll('.sheet')].map(s => [s.dataset.reason,
              [...s.querySelectorAll('img')].filter(i => i.complete && i.naturalWidth > 0).length]));""")
        assert sheets == {"mirroring": 2, "no_headroom": 1, "closed_eyes": 1, "no_face": 1}
        # the hostile label is text in the legend; no script element, no alert
        legend = _js(driver, "return [...document.querySelectorAll('#chart-reasons text')].map(t => t.textContent)")
        assert LABEL_XSS in legend
        assert QUERY_MATH in _js(
            driver, "return [...document.querySelectorAll('#chart-queries text')].map(t => t.textContent).join('|')")
        assert _js(driver, "return document.scripts.length") == 0
        driver.set_window_size(1400, int(_js(driver, "return document.body.scrollHeight")) + 40)
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

        # nothing left the page: the only requests are the file itself (and the data: thumbnails)
        requests = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
        sent = [m["params"] for m in requests if m["method"] == "Network.requestWillBeSent"]
        ours = [p["request"]["url"] for p in sent if p.get("documentURL") == out.as_uri()]
        assert out.as_uri() in ours and all(u == out.as_uri() or u.startswith("data:") for u in ours), ours
        assert not [p["request"]["url"] for p in sent if p["request"]["url"].startswith(("http:", "https:", "ws"))]
        resources = _js(driver, "return performance.getEntriesByType('resource').map(r => r.name)")
        assert all(u.startswith("data:") for u in resources), resources
        console = [e["message"] for e in driver.get_log("browser")]
        assert not any("Content Security Policy" in m or "ERR_" in m for m in console), console
