"""Learning from the reviewer: reasons in the log, `calibrate` (fit, report, --apply), thresholds per label,
`review --calibrate` ordering and disagreements, in the gallery, the terminal and the HTML report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from facecurate.calibrate import calibrate
from facecurate.catalog import Catalog, Decision
from facecurate.cli import app
from facecurate.errors import ConfigError
from facecurate.evaluate import Evaluation
from facecurate.review import calibration, decisions
from facecurate.review.items import Target
from facecurate.review.report import write_html
from facecurate.review.server import create_app
from facecurate.rules.fitting import Example, RuleFit, fit_rule
from facecurate.rules.registry import BY_NAME, RULES
from facecurate.workspace import Config, Workspace
from tests.test_review_support import chromium, faces_by_name, require_chromium, reviewed_workspace, serving

runner = CliRunner()
DEFAULTS = {r.name: r.default for r in RULES}
WAIT = 30


def _decide(ws: Workspace, plan: dict[str, tuple[str, str | None]]) -> None:
    with Catalog.open(ws.catalog_path) as cat:
        faces = faces_by_name(cat)
        for name, (decision, reason) in plan.items():
            f = faces[name]
            decisions.decide(cat, [Target(f"f{f['id']}", f["image_id"], f["face_index"])], decision, "tester", "t",
                             reason=reason)


# The reviewed workspace's ear_mean values: obama3 0.12, biden 0.28, obama 0.29, obama_partial 0.30, obama2 0.31,
# astronaut 0.33. This person calls the first three closed eyes and keeps the rest.
PLAN = {"obama3.jpg": ("rejected", "closed_eyes"), "biden.jpg": ("rejected", "closed_eyes"),
        "obama.jpg": ("rejected", "closed_eyes"), "obama_partial_face.jpg": ("kept", "rule_wrong"),
        "obama2.jpg": ("kept", None), "astronaut.jpg": ("kept", None)}


@pytest.fixture
def decided(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Workspace:
    ws = reviewed_workspace(tmp_path_factory, tmp_path / "ws")
    text = ws.config_path.read_text(encoding="utf-8")
    text = text.replace("\nmin_decisions = 20\n", "\nmin_decisions = 3\n").replace(
        "\nlabel_min_decisions = 30\n", "\nlabel_min_decisions = 3\n")
    ws.config_path.write_text(text, encoding="utf-8")
    _decide(ws, PLAN)
    return ws


# -- the fitting module -----------------------------------------------------------------------------------


def test_fit_finds_the_threshold_the_labels_ask_for_with_an_interval():
    rule = BY_NAME["closed_eyes"]
    ex = [Example({"ear_mean": v}, True) for v in (0.10, 0.14, 0.19, 0.21)] + \
         [Example({"ear_mean": v}, False) for v in (0.24, 0.26, 0.30, 0.33)]
    fit = fit_rule(rule, ex, DEFAULTS, resamples=500)
    assert (fit.labelled, fit.positives, fit.fired_count, fit.true_positives) == (8, 4, 2, 2)
    assert fit.precision == 1.0 and fit.recall == 0.5 and fit.agreement == 0.75
    assert fit.recall_low is not None and fit.recall_high is not None and fit.recall_low < 0.5 < fit.recall_high
    assert fit.suggested_threshold == pytest.approx(0.225) and fit.suggested_agreement == 1.0
    strict = fit_rule(rule, [*ex, Example({"ear_mean": 0.20}, False)], DEFAULTS, target_precision=0.99,
                      resamples=0)
    assert strict.suggested_precision == 1.0 and strict.suggested_threshold is not None
    assert strict.suggested_threshold <= 0.20  # the keep at 0.20 stays unflagged: precision first


def test_evaluate_and_calibrate_share_one_record():
    hints = Evaluation.__annotations__["rules"]
    assert "RuleFit" in str(hints)
    from facecurate.calibrate import Calibration

    assert "RuleFit" in str(Calibration.__annotations__["rules"])


# -- settings ---------------------------------------------------------------------------------------------


def test_thresholds_per_label_are_settings_checked_like_the_rest(tmp_path: Path):
    path = tmp_path / "facecurate.toml"
    path.write_text("[rules]\nclosed_eyes = 0.2\n\n[rules.makeup]\nclosed_eyes = 0.25\n\n[rules.\"press photos\"]\n"
                    "wink = 0.1\n", encoding="utf-8")
    cfg = Config.load(path)
    assert cfg.rule_thresholds(None)["closed_eyes"] == 0.2
    assert cfg.rule_thresholds("makeup")["closed_eyes"] == 0.25 and cfg.rule_thresholds("makeup")["wink"] == 0.18
    assert cfg.rule_thresholds("press photos")["wink"] == 0.1
    assert cfg.rule_thresholds("other")["closed_eyes"] == 0.2
    path.write_text("[rules.makeup]\nclosed_eye = 0.25\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="Did you mean closed_eyes"):
        Config.load(path)
    path.write_text("[rules.makeup]\nclosed_eyes = -1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="out of range"):
        Config.load(path)
    path.write_text("[rules.makeup]\nenabled = \"wink\"\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="thresholds only"):
        Config.load(path)


# -- reasons ----------------------------------------------------------------------------------------------


def test_the_log_records_the_reason_and_refuses_one_that_does_not_fit(decided: Workspace):
    with Catalog.open(decided.catalog_path) as cat:
        f = faces_by_name(cat)["obama3.jpg"]
        assert [r.reason for r in cat.review_history(f["image_id"], f["face_index"])] == ["closed_eyes"]
        target = [Target(f"f{f['id']}", f["image_id"], f["face_index"])]
        decisions.decide(cat, target, "rejected", "tester", "t", reason="wink")  # same decision, new reason
        assert [r.reason for r in cat.review_history(f["image_id"], f["face_index"])] == ["closed_eyes", "wink"]
        with pytest.raises(ValueError, match="does not go with kept"):
            decisions.decide(cat, target, "kept", "tester", "t", reason="wink")
        with pytest.raises(ValueError, match="does not go with rejected"):
            decisions.decide(cat, target, "rejected", "tester", "t", reason="rule_wrong")
    client = create_app(decided).test_client()
    token = client.get("/").data.decode().split('name="fc-token" content="')[1].split('"')[0]
    bad = client.post("/api/decide", json={"keys": [f"f{f['id']}"], "decision": "kept", "reason": "wink"},
                      headers={"X-Facecurate-Token": token})
    assert bad.status_code == 400 and "rule_wrong" in bad.get_json()["error"]


# -- calibrate --------------------------------------------------------------------------------------------


def test_calibrate_reports_agreement_and_apply_rewrites_and_redecides_without_measuring(decided: Workspace):
    ws = decided
    result = calibrate(ws, Catalog.open(ws.catalog_path), rules="closed_eyes")
    overall = next(f for f in result.rules if f.rule == "closed_eyes" and f.label is None)
    assert isinstance(overall, RuleFit)
    assert (overall.labelled, overall.positives, overall.fired_count, overall.true_positives) == (6, 3, 1, 1)
    assert overall.precision == 1.0 and overall.recall == pytest.approx(1 / 3)
    assert overall.suggested_threshold == pytest.approx(0.295) and overall.suggested_agreement == 1.0
    assert overall.changes == 1  # obama.jpg (0.29) would be rejected; biden was rejected by mirroring already
    assert result.decisions == 6 and result.reasons_given == 4 and overall.enough
    per_label = next(f for f in result.rules if f.label == "demo")
    assert per_label.suggested_threshold == pytest.approx(0.295)

    old_text = ws.config_path.read_text(encoding="utf-8")
    with Catalog.open(ws.catalog_path) as cat:
        scores_before = {n: f["scores"] for n, f in faces_by_name(cat).items()}
    shutil.rmtree(ws.crops_dir)  # nothing may be read again: re-deciding uses the stored measures only
    with Catalog.open(ws.catalog_path) as cat:
        applied = calibrate(ws, cat, rules="closed_eyes", apply=True).applied
        faces = faces_by_name(cat)
    assert applied is not None
    assert applied.thresholds == {"": {"closed_eyes": (0.18, 0.295)}, "demo": {"closed_eyes": (0.18, 0.295)}}
    assert Path(applied.backup).read_text(encoding="utf-8") == old_text
    assert Path(applied.backup).name.startswith("facecurate.toml.") and applied.backup.endswith(".bak")
    new_text = ws.config_path.read_text(encoding="utf-8")
    assert "# calibrate " in new_text and "fitted to 6 review decisions" in new_text and "was 0.18" in new_text
    cfg = Config.load(ws.config_path)
    assert cfg.rule_thresholds(None)["closed_eyes"] == 0.295 and cfg.rule_labels() == {"demo": {"closed_eyes": 0.295}}
    assert applied.redecided.now_rejected == 1 and applied.redecided.faces == 6
    assert "closed_eyes" in json.loads(faces["obama.jpg"]["reasons"])
    assert {n: f["scores"] for n, f in faces.items()} == scores_before
    again = calibrate(ws, Catalog.open(ws.catalog_path), rules="closed_eyes")
    assert next(f for f in again.rules if f.label is None).agreement == 1.0


def test_calibrate_cli_json_and_too_few_decisions_are_not_applied(tmp_path_factory, tmp_path: Path):
    ws = reviewed_workspace(tmp_path_factory, tmp_path / "ws")
    _decide(ws, {"obama.jpg": ("rejected", "closed_eyes")})
    res = runner.invoke(app, ["calibrate", "--apply", "--json", "-w", str(ws.root)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["decisions"] == 1 and data["applied"]["thresholds"] == {} and data["applied"]["backup"] == ""
    assert all(not f["enough"] for f in data["rules"])
    shown = runner.invoke(app, ["calibrate", "-w", str(ws.root)])
    assert shown.exit_code == 0 and "rules vs review decisions" in shown.output


# -- asking first about the faces that teach the most ---------------------------------------------------------


def test_queue_takes_the_faces_nearest_each_threshold_in_turn_plus_a_random_share():
    eye, mirror = BY_NAME["closed_eyes"], BY_NAME["mirroring"]
    cands = [calibration.Candidate(i, {"ear_mean": 0.05 + 0.01 * i, "mirroring": 0.5 - 0.01 * i}, None)
             for i in range(40)]
    got = calibration.queue(cands, [], lambda _l: DEFAULTS, [eye, mirror], 10, 0.1, seed=3)
    assert len(got) == 10 and len({q.face_id for q in got}) == 10
    assert sum(q.rule is None for q in got) == 1  # the random share
    near = [q for q in got if q.rule == "closed_eyes"]
    assert near[0].face_id == 13 and {q.rule for q in got if q.rule} == {"closed_eyes", "mirroring"}
    assert all(q.distance is not None and q.distance < 0.5 for q in got if q.rule)
    # decisions so far move the boundary the queue asks around (here: the person calls 0.25 closed)
    said = [calibration.Candidate(i, {"ear_mean": v}, None) for i, v in enumerate((0.1, 0.2, 0.25, 0.3, 0.35, 0.4))]
    answers = [type("A", (), {"decision": Decision.REJECTED if v < 0.27 else Decision.KEPT, "reason": None,
                              "scores": c.scores, "label": None})() for c, v in zip(said, (0.1, 0.2, 0.25, 0.3,
                                                                                          0.35, 0.4), strict=True)]
    moved = calibration.queue(cands, answers, lambda _l: DEFAULTS, [eye], 1, 0.0, seed=0)
    assert moved[0].boundary == pytest.approx(0.275) and moved[0].face_id in (22, 23)


def test_review_calibrate_and_disagreements_in_the_terminal(decided: Workspace):
    res = runner.invoke(app, ["review", "--calibrate", "3", "--json", "-w", str(decided.root)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["queue"] == []  # every face of this workspace is decided already
    res = runner.invoke(app, ["review", "--list", "--disagree", "--json", "-w", str(decided.root)])
    data = json.loads(res.stdout)
    groups = {g["rule"]: g["entries"] for g in data["groups"]}
    # obama (0.29) was rejected for closed eyes although every rule kept it; obama_partial kept against two rules
    assert data["disagreeing"] == 2 and [e["value"] for e in groups["closed_eyes"]] == [0.29]
    assert groups["closed_eyes"][0]["threshold"] == 0.18 and groups["closed_eyes"][0]["reason"] == "closed_eyes"
    assert {e["decision"] for e in groups["mirroring"]} == {"kept"} and "no_headroom" in groups
    table = runner.invoke(app, ["review", "--list", "--disagree", "-w", str(decided.root)])
    assert "person vs rules" in table.output


def test_gallery_filters_disagreements_orders_by_information_and_counts_per_rule(tmp_path_factory, tmp_path):
    ws = reviewed_workspace(tmp_path_factory, tmp_path / "ws")
    _decide(ws, {"obama.jpg": ("rejected", "closed_eyes")})
    client = create_app(ws).test_client()
    with Catalog.open(ws.catalog_path) as cat:
        faces = faces_by_name(cat)
    disagree = client.get("/api/query?status=any&decision=disagree").get_json()
    assert disagree["keys"] == [f"f{faces['obama.jpg']['id']}"]
    ordered = client.get("/api/query?status=any&sort=calibrate&first=10").get_json()
    undecided = {f"f{f['id']}" for n, f in faces.items() if n != "obama.jpg"}
    assert set(ordered["keys"][:len(undecided)]) == undecided  # the undecided faces first
    facets = client.get("/api/facets").get_json()
    eyes = next(r for r in facets["calibration"] if r["rule"] == "closed_eyes")
    assert eyes["decisions"] == 1 and eyes["disagreements"] == 1 and eyes["worth"] is False
    assert facets["hotkeys"]["1"] == "closed_eyes" and facets["hotkeys"]["0"] == "other"
    item = next(i for i in ordered["items"] if i["key"] == f"f{faces['obama.jpg']['id']}")
    assert item["review"]["reason"] == "closed_eyes"


def test_report_has_the_calibration_table_and_both_thresholds_on_the_histogram(decided: Workspace, tmp_path: Path):
    with Catalog.open(decided.catalog_path) as cat:
        fits = calibrate(decided, cat).rules
        written = write_html(decided, cat, tmp_path / "r.html", 0, fits)
    html = written.path.read_text(encoding="utf-8")
    assert 'id="calibration"' in html and '<tr data-rule="closed_eyes"><td>closed_eyes</td><td>all</td>' in html
    assert 'id="hist-closed_eyes-threshold"' in html and 'id="hist-closed_eyes-suggested"' in html
    assert "calibrate suggests 0.295" in html


# -- the gallery in Chromium --------------------------------------------------------------------------------


def test_gallery_reason_hotkeys_in_chromium(tmp_path_factory, tmp_path: Path):
    require_chromium()
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    ws = reviewed_workspace(tmp_path_factory, tmp_path / "ws")
    with serving(create_app(ws)) as base, chromium() as d:
        d.get(f"{base}/#status=any&sort=order")
        WebDriverWait(d, WAIT).until(lambda x: x.execute_script(
            "return window.fc && window.fc.ready && !document.querySelector('.cell.loading')"))
        first = d.execute_script("return window.fc.state.keys.slice(0, 2)")
        ActionChains(d).send_keys("1").perform()   # reject the first face: closed eyes
        ActionChains(d).send_keys("w").perform()   # keep the second: the rule was wrong
        WebDriverWait(d, WAIT).until(lambda x: x.execute_script(
            "return (window.fc.calibrationDrawn || 0) >= 2"))
        marks = d.execute_script(
            "return arguments[0].map(k => document.querySelector(`.cell[data-key='${k}'] .mark`).textContent)", first)
        assert marks == ["✗ rejected (closed eyes)", "✓ kept (rule wrong)"]
        rows = d.execute_script("return [...document.querySelectorAll('#calib-table tr[data-rule]')]"
                                ".map(r => r.dataset.rule)")
        assert "closed_eyes" in rows and "wink" in rows
    with Catalog.open(ws.catalog_path) as cat:
        by_id = {f"f{f['id']}": f for f in faces_by_name(cat).values()}
        got: list[Any] = [cat.review_history(by_id[k]["image_id"], by_id[k]["face_index"])[-1] for k in first]
    assert [(r.decision_after.value, r.reason) for r in got] == [("rejected", "closed_eyes"), ("kept", "rule_wrong")]
