"""What the gallery knows about rule scores: which rule reads each, its threshold and which end is the bad one.

``faces.scores`` holds measures (``ear_mean``, ``mirroring``, …); the rule registry says which rule reads which
measure, whether it fires below or above, and its threshold lives in ``[rules]`` of facecurate.toml. The gallery
sorts "worst first" and shows each score beside its threshold from that. A measure no rule reads falls back
on a ``[rules] NAME`` value and on the data: the bad end is where the faces the rules rejected sit compared
with those they kept; with no evidence, high is bad.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from facecurate.catalog import Catalog
from facecurate.catalog.gallery import NAME_RE
from facecurate.rules.registry import RULES
from facecurate.workspace import Config

__all__ = ["NAME_RE", "RuleRef", "ScoreInfo", "reason_scores", "registry", "score_info", "score_infos"]


@dataclass(frozen=True)
class RuleRef:
    name: str                               # rule and reason code
    measure: str                            # key in faces.scores
    direction: Literal["below", "above"]    # fires below | at or above the threshold


@dataclass(frozen=True)
class ScoreInfo:
    name: str
    worse: Literal["high", "low"]  # which end of the scale the rules dislike
    threshold: float | None
    rule: str | None = None    # the rule (reason code) that reads it

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "worse": self.worse, "threshold": self.threshold, "rule": self.rule}

    def fails(self, value: float | None) -> bool | None:
        """Whether a value is past the threshold on the bad side, as the rules test it (None: no threshold)."""
        if self.threshold is None or value is None:
            return None
        return value >= self.threshold if self.worse == "high" else value < self.threshold


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def registry() -> list[RuleRef]:
    """Which rule reads which measure, from the rules stage's registry."""
    return [RuleRef(r.name, r.measure, r.direction) for r in RULES]


def score_infos(catalog: Catalog, cfg: Config) -> list[ScoreInfo]:
    """Every numeric score key present on faces, with its rule, threshold and bad end, sorted by name.

    Listing the keys is one pass over the scores; a measure the registry knows costs nothing more, any
    other one pass over that score alone (the aggregates for all keys at once cost 4x more at 10,000 faces).
    """
    names = catalog.score_names()
    rules = {r.measure: r for r in registry()}
    return [score_info(catalog, cfg, name, rules) for name in names if NAME_RE.match(name)]


def score_info(catalog: Catalog, cfg: Config, name: str, rules: dict[str, RuleRef] | None = None) -> ScoreInfo:
    """One score's info: free when a rule reads it; else the bad end is where rejected faces sit compared
    with kept ones (high when there is no evidence), and a ``[rules] NAME`` value is its threshold."""
    limits = cfg.section("rules")
    rule = (rules if rules is not None else {r.measure: r for r in registry()}).get(name)
    if rule is not None:
        return ScoreInfo(name, "low" if rule.direction == "below" else "high", _number(limits.get(rule.name)),
                         rule.name)
    bad, good = catalog.score_means(name)
    return ScoreInfo(name, "low" if bad is not None and good is not None and bad < good else "high",
                     _number(limits.get(name)))


def reason_scores(infos: list[ScoreInfo]) -> dict[str, str]:
    """Reason code → the score it reads, so choosing a reason can sort by that score."""
    out = {i.rule: i.name for i in infos if i.rule}
    out.update({i.name: i.name for i in infos if i.name not in out})
    return out
