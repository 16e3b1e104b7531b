"""The rule registry: every rejection rule, its reason code, its score and when it fires.

A rule reads one measure (a number stored per face in ``faces.scores``) and fires when that number is
past its threshold. Measures are computed once and kept; thresholds are applied at decision time, so
changing one in facecurate.toml re-decides every face without recomputing anything. The thresholds' defaults
and their one-line docs are settings (``[rules]`` in facecurate.workspace), so they are written once, where
facecurate.toml is generated from.
Some rules apply only where another does not (a wink is not also 'closed'; covered eyes are looked for
only on eyes the landmarks call open): ``applies`` says so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from facecurate.workspace import setting

Measures = Mapping[str, float | None]
Thresholds = Mapping[str, float]
# The reason codes written to the catalog and the manifest: one per rule, in registry order.
Reason = Literal["no_face", "closed_eyes", "wink", "occluded_eyes", "mirroring", "no_headroom", "small_face",
                 "extreme_pose", "multiple_faces", "product_shot", "blurry", "grayscale"]
Family = Literal["eyes", "geometry", "pixels", "image"]
Direction = Literal["below", "above"]


@dataclass(frozen=True)
class Rule:
    name: Reason
    family: Family                # "image": a reason about the photo, set by a stage, with no threshold to tune
    measure: str                  # key in faces.scores
    direction: Direction
    applies: Callable[[Measures, Thresholds], bool] | None = None
    about: str = ""               # the doc of an image-level rule, which has no setting to hold one

    @property
    def default(self) -> float:
        """The threshold facecurate.toml starts with; an image-level rule fires on its flag (1.0)."""
        return 1.0 if self.family == "image" else float(setting("rules", self.name).default)

    @property
    def doc(self) -> str:
        """One line: what the rule catches and why its default."""
        return self.about if self.family == "image" else setting("rules", self.name).doc

    def fires(self, measures: Measures, thresholds: Thresholds) -> bool:
        value = measures.get(self.measure)
        if value is None or value != value:  # missing or NaN: the rule cannot judge this face
            return False
        if self.applies is not None and not self.applies(measures, thresholds):
            return False
        limit = thresholds[self.name]
        return value < limit if self.direction == "below" else value >= limit


# A wink is lopsided: the shut eye reads under this share of the open one (both shut: similar ratios).
WINK_RATIO = 0.6
# An eye aspect ratio this high is an eye plainly open (dev open eyes: median 0.28); a lopsided pair with one
# eye this wide is taken as a wink even when the eye cascade sees neither eye. On dev this caught one wink
# the cascade missed and lost one sunglasses face (mesh guessing 0.35 / 0.15 behind the lenses).
OPEN_EYE = 0.30
# ...but no open eye reads this wide: on dev the widest of 298 open and ordinary faces read 0.50, the widest wink
# 0.50; past this the 'open' lids are FaceMesh guessing on a lens (one sunglasses face read 0.63 / 0.17 and was
# called a wink once crops got sharper). Such a pair is not taken as a wink on width alone.
NOT_AN_EYE = 0.55


def _is_wink_shape(m: Measures, t: Thresholds) -> bool:
    ear_min, ear_max = m.get("ear_min"), m.get("ear_max")
    return (ear_min is not None and ear_max is not None and ear_min < t["wink"] and ear_max >= t["closed_eyes"]
            and ear_min < WINK_RATIO * ear_max)


def _an_eye_seen(m: Measures, t: Thresholds) -> bool:
    """The eye cascade found an eye (the occlusion score stays under its threshold only then)."""
    occlusion = m.get("occlusion")
    return occlusion is not None and occlusion < t["occluded_eyes"]


def _is_wink(m: Measures, t: Thresholds) -> bool:
    """A lopsided pair whose open eye is real: seen by the eye cascade, or read plainly wide by the landmarks.

    Where no eye is seen and the 'open' one reads only 0.18-0.30, it is nearly always both eyes shut (laughing,
    squeezed or downcast lids: FaceMesh opens one of them a little): on dev 23 closed faces had that shape,
    against 1 sunglasses face and no wink. Such faces are judged by the mean, as closed eyes or covered eyes."""
    ear_max = m.get("ear_max")
    return _is_wink_shape(m, t) and (_an_eye_seen(m, t)
                                     or (ear_max is not None and OPEN_EYE <= ear_max < NOT_AN_EYE))


def _closed_not_wink(m: Measures, t: Thresholds) -> bool:
    """A shut eye beside a plainly open one is a wink even when the pair's mean is low."""
    return not _is_wink(m, t)


def _not_closed(m: Measures, t: Thresholds) -> bool:
    """Covered eyes are looked for only where the landmarks call both eyes open (not shut, not winking), or
    where FaceMesh found no face at all: then no lid was read to call the eyes shut, and no eye was seen."""
    if m.get("mesh_found") == 0.0:
        return True
    ear_mean = m.get("ear_mean")
    return ear_mean is not None and ear_mean >= t["closed_eyes"] and not _is_wink(m, t)


def _colourful_frame(m: Measures, t: Thresholds) -> bool:
    share = m.get("frame_saturated")
    return share is not None and share >= 0.1


RULES: tuple[Rule, ...] = (
    Rule("no_face", "image", "no_face", "above",
         about="MTCNN found no face at crop.min_prob; set by the crop stage (an image-level reason)."),
    Rule("closed_eyes", "eyes", "ear_mean", "below", _closed_not_wink),
    Rule("wink", "eyes", "ear_min", "below", _is_wink),
    Rule("occluded_eyes", "eyes", "occlusion", "above", _not_closed),
    Rule("mirroring", "geometry", "mirroring", "above"),
    Rule("no_headroom", "geometry", "headroom_iod", "below"),
    Rule("small_face", "geometry", "upscale", "above"),
    Rule("extreme_pose", "geometry", "extreme_pose", "above"),
    Rule("multiple_faces", "geometry", "other_face", "above"),
    Rule("product_shot", "pixels", "face_share", "below", _colourful_frame),
    Rule("blurry", "pixels", "sharpness", "below"),
    Rule("grayscale", "pixels", "chroma", "below"),
)
BY_NAME: dict[str, Rule] = {r.name: r for r in RULES}


def select(names: str | list[str] | None) -> list[Rule]:
    """Rules by name ('all', a comma list or a list); unknown names raise ValueError naming the valid ones."""
    if names is None or names == "all":
        return list(RULES)
    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    unknown = [n for n in wanted if n not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown rule(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    return [BY_NAME[n] for n in wanted]


def decide(measures: Measures, thresholds: Thresholds, rules: list[Rule]) -> list[Reason]:
    """Reason codes of the rules that fire, in registry order."""
    return [r.name for r in rules if r.fires(measures, thresholds)]
