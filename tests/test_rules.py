"""Every rule on bundled public-domain photos and edits generated from them, plus the pure measures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecurate import demo_variants as dv
from facecurate.catalog import Catalog, State
from facecurate.evaluate import evaluate_dir
from facecurate.faces.crop import CropOptions, run_crop
from facecurate.faces.detect import BatchedDetector
from facecurate.ingest import import_paths
from facecurate.rules import geometry
from facecurate.rules.registry import BY_NAME, RULES, decide
from facecurate.rules.stage import explain, run_filter
from facecurate.workspace import Workspace
from tests.conftest import RecordingProgress

FRONT = np.array([[100, 100], [160, 100], [130, 135], [108, 165], [152, 165]], dtype=float)


@pytest.fixture(scope="module")
def obama() -> tuple[np.ndarray, np.ndarray]:
    from facecurate.demo import DEMO_DATA

    img = np.asarray(Image.open(DEMO_DATA / "obama.jpg").convert("RGB")).copy()
    detector = BatchedDetector(device="cpu", batch_size=1, max_side=1024, min_face_size=20)
    landmarks = detector.detect([img])[0][0].landmarks
    return img, np.asarray(landmarks)


def _variants(obama, tmp: Path) -> dict[str, Path]:
    """One generated photo per rule, named by the reason it must raise (keep = the untouched original);
    the edits are the demo's (facecurate.demo_variants), so the demo and these tests exercise the same."""
    img, lm = obama
    face = dv.face_box(img, lm)
    out: dict[str, np.ndarray] = {
        "keep": img, "closed_eyes": dv.closed_eyes(img, lm), "wink": dv.wink(img, lm),
        "occluded_eyes": dv.covered_eyes(img, lm), "no_headroom": dv.no_headroom(img, lm),
        "mirroring": dv.off_edge(img, lm), "grayscale": dv.grayscale(img), "blurry": dv.blurry(img, lm),
        "small_face": dv.small(img), "multiple_faces": dv.side_by_side(face, face[:, ::-1].copy()),
        "product_shot": dv.product_shot(face),
    }
    paths = {}
    for name, arr in out.items():
        (tmp / name).mkdir(parents=True, exist_ok=True)
        paths[name] = tmp / name / f"{name}.png"
        Image.fromarray(np.ascontiguousarray(arr)).save(paths[name])
    return paths


@pytest.fixture(scope="module")
def judged(obama, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rules")
    from facecurate.workspace import init_workspace

    ws = init_workspace(tmp / "ws")
    paths = _variants(obama, tmp / "photos")
    catalog = Catalog.open(ws.catalog_path)
    for name, path in paths.items():
        import_paths(ws, catalog, [path], label=name)
    run_crop(ws, catalog, CropOptions.from_config(ws, size=512, device="cpu", all_faces=False))
    summary = run_filter(ws, catalog)
    reasons = {}
    for label, r in catalog.conn.execute("SELECT i.label, f.reasons FROM faces f JOIN images i ON i.id=f.image_id"):
        reasons[label] = set(json.loads(r))
    yield ws, catalog, reasons, summary, tmp / "photos"
    catalog.close()


@pytest.mark.parametrize("rule", ["closed_eyes", "wink", "occluded_eyes", "no_headroom", "mirroring", "grayscale",
                                  "blurry", "small_face", "multiple_faces", "product_shot"])
def test_each_rule_fires_on_its_own_edit(judged, rule: str):
    _, _, reasons, _, _ = judged
    assert rule in reasons[rule], reasons[rule]


def test_the_original_portrait_is_kept(judged):
    _, catalog, reasons, _, _ = judged
    assert reasons["keep"] == set()
    image_id = catalog.conn.execute("SELECT id FROM images WHERE label='keep'").fetchone()[0]
    assert catalog.item_states()[(image_id, 0)].state == State.KEEP


def test_eye_edits_raise_only_the_matching_eye_rule(judged):
    _, _, reasons, _, _ = judged
    eye = {"closed_eyes", "wink", "occluded_eyes"}
    for rule in eye:
        assert reasons[rule] & eye == {rule}, (rule, reasons[rule])


def test_every_score_is_stored_and_reruns_are_incremental(judged):
    ws, catalog, _, first, _ = judged
    assert first.measured == first.faces
    scores = json.loads(catalog.conn.execute("SELECT scores FROM faces LIMIT 1").fetchone()[0])
    for rule in RULES:
        if rule.family != "image":
            assert rule.measure in scores, rule.name
    again = run_filter(ws, catalog)
    assert again.measured == 0 and again.by_reason == first.by_reason


def test_threshold_change_redecides_without_recomputing(judged):
    ws, catalog, _, _, _ = judged
    original = ws.config_path.read_text()
    try:
        ws.config_path.write_text(original.replace("grayscale = 3.0", "grayscale = 0.0"))
        summary = run_filter(ws, catalog)
        assert summary.measured == 0 and "grayscale" not in summary.by_reason
    finally:
        ws.config_path.write_text(original)
        run_filter(ws, catalog)


def test_explain_lists_every_rule_beside_its_threshold(judged):
    ws, catalog, _, _, _ = judged
    sha = catalog.conn.execute("SELECT i.sha256 FROM images i WHERE i.label='mirroring'").fetchone()[0]
    rows = explain(ws, catalog, f"{sha[:16]}_0")
    by_rule = {r.rule: r for r in rows}
    mirroring = by_rule["mirroring"]
    assert mirroring.fired and mirroring.value is not None and mirroring.value > mirroring.threshold
    assert len(rows) == len([r for r in RULES if r.family != "image"])


def test_evaluate_measures_rules_against_folders(judged, tmp_path: Path):
    _, _, _, _, photos = judged
    tree = tmp_path / "labelled"
    for name in ("keep", "mirroring", "no_headroom", "grayscale"):
        (tree / name).mkdir(parents=True)
        (tree / name / f"{name}.png").write_bytes((photos / name / f"{name}.png").read_bytes())
    result = evaluate_dir(tree, tmp_path / "ws", device="cpu", target_precision=0.9)
    rules = {r.rule: r for r in result.rules}
    for name in ("mirroring", "no_headroom", "grayscale"):
        assert rules[name].positives == 1 and rules[name].recall == 1.0
    assert rules["grayscale"].precision == 1.0 and rules["grayscale"].by_label == {"grayscale": 1}
    assert result.keep_rejected == 0.0
    assert result.as_dict()["rules"][0]["rule"] == "no_face"  # the --json shape: plain dicts, registry order


def test_evaluate_refuses_unknown_folder_names(tmp_path: Path):
    (tmp_path / "tree" / "squint").mkdir(parents=True)
    from facecurate.errors import FacecurateError

    with pytest.raises(FacecurateError, match="closed_eyes"):
        evaluate_dir(tmp_path / "tree", tmp_path / "ws")


def test_headroom_in_eye_distances():
    assert geometry.headroom_iod(FRONT + np.array([0, 200])) > 1.0  # eyes 300 px down: room above the head
    cut = FRONT - np.array([0, 100])  # eyes at y = 0: the top of the head is far above the photo
    assert geometry.headroom_iod(cut) < 0


def test_pose_measures_separate_frontal_from_turned():
    turned = FRONT.copy()
    turned[2, 0] = 158  # the nose at the right eye: a profile-like turn
    assert geometry.pose_measures(FRONT)["extreme_pose"] < 0.5
    assert geometry.pose_measures(turned)["extreme_pose"] >= 1.0


def test_other_faces_counted_only_when_confident_and_near():
    main = [100, 100, 200, 220]
    far = {"box": [900, 100, 1000, 220], "prob": 0.99}
    near = {"box": [210, 100, 300, 210], "prob": 0.99}
    weak = {"box": [210, 100, 300, 210], "prob": 0.5}
    assert geometry.other_face_measure(main, [{"box": main, "prob": 0.99}, far, weak], 0.9) == 0.0
    assert geometry.other_face_measure(main, [near], 0.9) == pytest.approx(0.9)


def test_decide_respects_preconditions():
    limits = {r.name: r.default for r in RULES}
    wink = {"ear_mean": 0.14, "ear_min": 0.05, "ear_max": 0.24, "occlusion": 0.5}
    closed = {"ear_mean": 0.08, "ear_min": 0.07, "ear_max": 0.09, "occlusion": 1.0}
    covered = {"ear_mean": 0.25, "ear_min": 0.15, "ear_max": 0.27, "occlusion": 1.05}
    assert decide(wink, limits, list(RULES)) == ["wink"]
    assert decide(closed, limits, list(RULES)) == ["closed_eyes"]
    assert decide(covered, limits, list(RULES)) == ["occluded_eyes"]  # not a wink: the lids are guesses
    assert BY_NAME["blurry"].fires({"sharpness": None}, limits) is False


def test_lopsided_eyes_with_no_eye_seen_are_shut_unless_one_is_wide_open():
    """FaceMesh often opens one of two squeezed-shut eyes a little; with no eye seen that is closed, not a wink."""
    limits = {r.name: r.default for r in RULES}
    squeezed = {"ear_mean": 0.14, "ear_min": 0.07, "ear_max": 0.21, "occlusion": 1.02}
    seen = squeezed | {"occlusion": 0.5}
    wide = {"ear_mean": 0.22, "ear_min": 0.1, "ear_max": 0.34, "occlusion": 1.02}
    half_open = {"ear_mean": 0.2, "ear_min": 0.13, "ear_max": 0.27, "occlusion": 1.02}
    assert decide(squeezed, limits, list(RULES)) == ["closed_eyes"]
    assert decide(seen, limits, list(RULES)) == ["wink"]
    assert decide(wide, limits, list(RULES)) == ["wink"]
    assert decide(half_open, limits, list(RULES)) == ["occluded_eyes"]  # mean open, nothing seen: covered


def test_an_open_eye_reading_wider_than_any_eye_is_no_wink():
    """Lids read past NOT_AN_EYE are FaceMesh guessing on a lens: with no eye seen, that pair is covered eyes."""
    from facecurate.rules.registry import NOT_AN_EYE, OPEN_EYE

    limits = {r.name: r.default for r in RULES}
    lens = {"ear_mean": 0.40, "ear_min": 0.17, "ear_max": 0.63, "occlusion": 1.02}
    assert OPEN_EYE < NOT_AN_EYE < lens["ear_max"]
    assert decide(lens, limits, list(RULES)) == ["occluded_eyes"]
    assert decide(lens | {"occlusion": 0.5}, limits, list(RULES)) == ["wink"]  # an eye seen: a wink still


def test_no_face_for_facemesh_means_no_eye_seen():
    """A crop FaceMesh finds no face in (centre or whole) has no eye located: occluded_eyes, never shut/wink."""
    from facecurate.rules.eyes import FaceMesh
    from facecurate.rules.measure import eye_family

    blank = np.full((256, 256, 3), 128, np.uint8)
    measures = eye_family(FaceMesh.shared(), blank)
    assert measures["mesh_found"] == 0.0 and measures["ear_mean"] is None
    limits = {r.name: r.default for r in RULES}
    assert decide(measures, limits, list(RULES)) == ["occluded_eyes"]


def test_a_cascade_box_counts_only_centred_on_the_landmark_eye(judged):
    """The cascade still finds the eye in a patch centred a fifth of an eye distance below it, but that box is
    off the point asked about, so it does not count (what keeps lens rims and reflections from counting)."""
    import cv2

    from facecurate import media
    from facecurate.rules.eyes import (
        LEFT_CONTOUR,
        PATCH_HALF_IOD,
        PATCH_SIDE,
        RIGHT_CONTOUR,
        FaceMesh,
        _eye_cascade,
        eye_seen,
        mesh_view,
    )

    ws, catalog, _, _, _ = judged
    rel = catalog.conn.execute("SELECT f.crop_path FROM faces f JOIN images i ON i.id=f.image_id "
                               "WHERE i.label='keep'").fetchone()[0]
    view = mesh_view(media.load_rgb(ws.resolve(rel), 10**8, 10**8).pixels)
    points = FaceMesh.shared().points(view)
    assert points is not None
    gray = cv2.cvtColor(view, cv2.COLOR_RGB2GRAY)
    centres = [points[list(c)].mean(0) for c in (RIGHT_CONTOUR, LEFT_CONTOUR)]
    iod = float(np.linalg.norm(centres[0] - centres[1]))
    for centre in centres:
        assert eye_seen(gray, centre, iod)
        below = centre + np.array([0.0, 0.2 * iod])
        half = int(iod * PATCH_HALF_IOD)
        x, y = int(below[0]), int(below[1])
        patch = cv2.resize(gray[y - half:y + half, x - half:x + half], (PATCH_SIDE, PATCH_SIDE),
                           interpolation=cv2.INTER_AREA)
        assert len(_eye_cascade().detectMultiScale(patch, scaleFactor=1.1, minNeighbors=3, minSize=(12, 12)))
        assert not eye_seen(gray, below, iod)


def test_mesh_view_cuts_the_padding_and_keeps_the_centre():
    from facecurate.rules.eyes import MESH_SIDE, mesh_view

    crop = np.zeros((512, 512, 3), np.uint8)
    crop[154:358, 154:358] = 200  # the central 40 %
    view = mesh_view(crop, 0.7)
    assert view.shape == (MESH_SIDE, MESH_SIDE, 3)
    assert view[MESH_SIDE // 2, MESH_SIDE // 2, 0] == 200 and view[0, 0, 0] == 0
    assert mesh_view(crop, 1.0).shape == (MESH_SIDE, MESH_SIDE, 3)


def test_unknown_rule_name_is_a_config_error(ws: Workspace, catalog: Catalog):
    from facecurate.errors import ConfigError

    with pytest.raises(ConfigError, match="known:"):
        run_filter(ws, catalog, rules="closed_eyes,squint")


def test_eye_family_falls_back_to_the_whole_crop_when_the_centre_has_no_face(judged):
    """A face off-centre in its crop: FaceMesh finds nothing in the central view, so the whole crop is read."""
    from facecurate import media
    from facecurate.rules.eyes import MESH_SIDE, FaceMesh
    from facecurate.rules.measure import eye_family

    ws, catalog, _, _, _ = judged
    rel = catalog.conn.execute("SELECT f.crop_path FROM faces f JOIN images i ON i.id=f.image_id "
                               "WHERE i.label='keep'").fetchone()[0]
    crop = media.load_rgb(ws.resolve(rel), 10**8, 10**8).pixels
    real = FaceMesh.shared()

    class CentreBlind:
        """Sees no face in the first view it is shown (the centre), then meshes as usual."""

        def __init__(self) -> None:
            self.views: list[np.ndarray] = []

        def points(self, view: np.ndarray) -> np.ndarray | None:
            self.views.append(view)
            return None if len(self.views) == 1 else real.points(view)

    blind = CentreBlind()
    measures = eye_family(blind, crop)  # type: ignore[arg-type]
    assert len(blind.views) == 2 and all(v.shape[0] == MESH_SIDE for v in blind.views)
    assert measures["mesh_found"] == 1.0 and measures["ear_mean"] is not None and measures["ear_mean"] > 0.18
    direct = eye_family(real, crop)
    assert direct["mesh_found"] == 1.0 and abs(direct["ear_mean"] - measures["ear_mean"]) < 0.08


def test_thresholds_live_in_the_settings_table_and_agree_with_the_registry():
    from typing import get_args

    from facecurate.rules.registry import Reason
    from facecurate.workspace import SETTINGS

    assert tuple(BY_NAME) == get_args(Reason)  # the reason codes are the registry's names, in order
    rule_settings = {s.key: s for s in SETTINGS if s.section == "rules"}
    measured = [r for r in RULES if r.family != "image"]
    assert set(rule_settings) == {"enabled"} | {r.name for r in measured}
    for r in measured:
        fires = "below" if r.direction == "below" else "at or above"
        assert rule_settings[r.name].doc.endswith(f"(fires {fires} this)"), r.name
        assert r.default == rule_settings[r.name].default and r.doc == rule_settings[r.name].doc


def test_filter_reports_progress_and_counts_what_the_rules_decided(judged):
    ws, catalog, reasons, first, _ = judged
    assert first.passed + first.rejected == first.faces
    assert first.rejected == sum(bool(r) for r in reasons.values()) and not first.failed
    recorder = RecordingProgress()
    again = run_filter(ws, catalog, progress=recorder)
    events = recorder.events
    assert events[0] == ("start", "filter", first.faces, "faces") and events[-1] == ("finish",)
    assert sum(e[1] for e in events if e[0] == "advance") == first.faces
    assert (again.passed, again.rejected) == (first.passed, first.rejected)


def test_the_facemesh_warm_up_face_is_drawn_and_meshed():
    """FaceMesh logs more set-up on its first meshed face: the drawn warm-up face must be meshed to absorb it."""
    from facecurate.rules.eyes import FaceMesh, _warm_up_face

    assert FaceMesh.shared().points(_warm_up_face()) is not None
