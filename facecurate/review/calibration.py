"""What review decisions teach the rules: reasons, examples per rule, and which faces to ask about first.

A person's decision becomes a labelled example for each rule (:func:`examples`): a keep says no rule should
fire; a reject that names a rule (hotkeys ``1``-``5``) says that rule should fire and the others need not; a
reject with no reason, or ``other``, says "some rule should" and counts for every rule. ``calibrate`` fits the
thresholds to those examples (:mod:`facecurate.rules.fitting`).

:func:`queue` is ``review --calibrate N`` and the gallery's "most informative first" order: a threshold is
learnt fastest from faces whose measure sits nearest it (uncertainty sampling), so the queue takes, rule by rule
and label by label in turn (fewest decisions first), the undecided faces nearest each rule's boundary — the
threshold the decisions so far point to, else the one in force — plus a random share so the error away from the
thresholds is measured too, not guessed.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from facecurate.catalog import Catalog, Decision
from facecurate.rules.fitting import Example, fit_rule
from facecurate.rules.registry import BY_NAME, RULES, Rule
from facecurate.workspace import Config

# The gallery's reason hotkeys: a reject with 1-5 names the rule it agrees with, 0 says "another reason".
HOTKEYS: dict[str, str] = {"1": "closed_eyes", "2": "wink", "3": "occluded_eyes", "4": "no_headroom",
                           "5": "mirroring", "0": "other"}
OTHER = "other"
RULE_WRONG = "rule_wrong"   # a keep that says "the rule that rejected this was wrong"
TUNABLE: tuple[Rule, ...] = tuple(r for r in RULES if r.family != "image")
REJECT_REASONS: tuple[str, ...] = (*(r.name for r in TUNABLE), OTHER)
KEEP_REASONS: tuple[str, ...] = (RULE_WRONG,)
MIN_FIT = 6                 # decisions of a rule, with both outcomes, before the queue trusts their boundary


class Decided(Protocol):
    """What a decision contributes: the catalog's DecidedFace, or a simulated reviewer's answer."""

    @property
    def decision(self) -> Decision: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def scores(self) -> Mapping[str, Any]: ...
    @property
    def label(self) -> str | None: ...


def check_reason(decision: Decision | str, reason: str | None) -> str | None:
    """The reason as the log stores it; ValueError when it does not go with the decision."""
    if reason is None or reason == "":
        return None
    allowed = REJECT_REASONS if Decision(decision) == Decision.REJECTED else KEEP_REASONS
    if reason not in allowed:
        raise ValueError(f"reason {reason!r} does not go with {Decision(decision).value}: use one of "
                         f"{', '.join(allowed)}")
    return reason


def is_positive(rule: str, decision: Decision, reason: str | None) -> bool:
    """Should ``rule`` fire on a face so decided? A reject naming another rule says no."""
    if decision != Decision.REJECTED:
        return False
    return reason in (None, OTHER) or reason == rule


def examples(rule: Rule, decided: Sequence[Decided], label: str | None = None) -> list[Example]:
    """The decisions on faces the rule can judge (its measure stored), as examples; ``label``: that label only."""
    out = []
    for d in decided:
        if label is not None and d.label != label:
            continue
        value = d.scores.get(rule.measure)
        if value is None or value != value:
            continue
        out.append(Example(d.scores, is_positive(rule.name, d.decision, d.reason)))
    return out


@dataclass(frozen=True)
class RuleProgress:
    """One rule's decisions so far, for the gallery: is calibrating it worth running yet?"""

    rule: str
    decisions: int          # decided faces the rule can judge
    disagreements: int      # ... where the person and the rule differ
    needed: int             # [calibrate] min_decisions
    worth: bool             # enough decisions, and at least one disagreement to learn from

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def progress(decided: Sequence[Decided], limits_for: Callable[[str | None], Mapping[str, float]],
             rules: Sequence[Rule], needed: int) -> list[RuleProgress]:
    out = []
    for rule in rules:
        n = wrong = 0
        for d in decided:
            value = d.scores.get(rule.measure)
            if value is None or value != value:
                continue
            n += 1
            wrong += rule.fires(d.scores, limits_for(d.label)) != is_positive(rule.name, d.decision, d.reason)
        out.append(RuleProgress(rule.name, n, wrong, needed, n >= needed and wrong > 0))
    return out


@dataclass(frozen=True)
class Candidate:
    """An undecided face the rules judged: what the queue chooses from."""

    face_id: int             # the catalog's face id (the simulation numbers its faces the same way)
    scores: Mapping[str, Any]
    label: str | None


@dataclass(frozen=True)
class QueueItem:
    face_id: int
    rule: str | None         # the rule whose threshold it sits near; None: drawn at random
    label: str | None
    measure: str | None
    value: float | None
    boundary: float | None   # the threshold it was measured against
    distance: float | None   # |value - boundary| in units of the measure's spread

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _could_fire(rule: Rule, scores: Mapping[str, Any], limits: Mapping[str, float], value: float) -> bool:
    """Would the rule judge this face at some threshold? Its preconditions, with its own threshold moved just
    past this face's value (a wink's shape test reads the wink threshold itself)."""
    if rule.applies is None:
        return True
    trial = dict(limits)
    trial[rule.name] = value + 1e-6 if rule.direction == "below" else value - 1e-6
    return rule.applies(scores, trial)


def _spread(values: list[float]) -> float:
    """Interquartile range (a robust scale: one outlier does not stretch it), never 0."""
    if len(values) < 4:
        return 1.0
    s = sorted(values)
    iqr = s[(3 * len(s)) // 4] - s[len(s) // 4]
    return iqr if iqr > 0 else (s[-1] - s[0]) or 1.0


def boundary(rule: Rule, decided: Sequence[Decided], limits: Mapping[str, float], label: str | None) -> float:
    """Where the decisions so far put the rule's threshold (most agreement), else the threshold in force."""
    ex = examples(rule, decided, label)
    if len(ex) >= MIN_FIT and 0 < sum(e.positive for e in ex) < len(ex):
        fit = fit_rule(rule, ex, limits, resamples=0)
        if fit.suggested_threshold is not None:
            return fit.suggested_threshold
    return float(limits[rule.name])


def queue(candidates: Sequence[Candidate], decided: Sequence[Decided],
          limits_for: Callable[[str | None], Mapping[str, float]], rules: Sequence[Rule], n: int,
          random_share: float, seed: int) -> list[QueueItem]:
    """Up to ``n`` undecided faces, most informative first (see the module doc)."""
    if n <= 0 or not candidates:
        return []
    rules = [r for r in rules if r.family != "image"]
    labels = sorted({c.label or "" for c in candidates})
    groups: list[tuple[int, str, str, list[QueueItem]]] = []
    for rule in rules:
        values = [float(v) for c in candidates if (v := c.scores.get(rule.measure)) is not None and v == v]
        scale = _spread(values)
        for label in labels:
            lab = label or None
            limits = limits_for(lab)
            edge = boundary(rule, decided, limits, lab)
            items = []
            for c in candidates:
                v = c.scores.get(rule.measure)
                if (c.label or "") != label or v is None or v != v or not _could_fire(rule, c.scores, limits, v):
                    continue
                items.append(QueueItem(c.face_id, rule.name, lab, rule.measure, float(v), edge, abs(v - edge) / scale))
            if items:
                items.sort(key=lambda q: (q.distance or 0.0, q.face_id))
                known = sum(1 for d in decided if (d.label or "") == label
                            and d.scores.get(rule.measure) is not None)
                groups.append((known, rule.name, label, items))
    groups.sort(key=lambda g: (g[0], g[1], g[2]))  # fewest decisions first
    rng = random.Random(seed)
    n_random = round(n * random_share)
    every = max(1, round(1 / random_share)) if random_share > 0 else 0
    pool = list(candidates)
    rng.shuffle(pool)
    chosen: list[QueueItem] = []
    taken: set[int] = set()
    cursors = [0] * len(groups)
    randoms = turn = 0
    while len(chosen) < n:
        if every and randoms < n_random and (len(chosen) + 1) % every == 0:
            while pool and pool[-1].face_id in taken:
                pool.pop()
            if pool:
                c = pool.pop()
                chosen.append(QueueItem(c.face_id, None, c.label, None, None, None, None))
                taken.add(c.face_id)
                randoms += 1
                continue
        item = None
        for _ in range(len(groups)):  # the next group in turn that still has a face to offer
            gi = turn % len(groups)
            turn += 1
            items = groups[gi][3]
            while cursors[gi] < len(items) and items[cursors[gi]].face_id in taken:
                cursors[gi] += 1
            if cursors[gi] < len(items):
                item = items[cursors[gi]]
                cursors[gi] += 1
                break
        if item is None:  # every group is used up: fill with the random rest
            rest = [c for c in pool if c.face_id not in taken]
            chosen += [QueueItem(c.face_id, None, c.label, None, None, None, None) for c in rest[:n - len(chosen)]]
            break
        chosen.append(item)
        taken.add(item.face_id)
    return chosen[:n]


def rule_of(name: str) -> Rule:
    return BY_NAME[name]


def counts_by_label(decided: Sequence[Decided]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for d in decided:
        out[d.label or ""] += 1
    return dict(out)


def limits_from(cfg: Config) -> Callable[[str | None], dict[str, float]]:
    """Thresholds per label from the settings (``[rules]`` overlaid with ``[rules.<label>]``), cached per label."""
    own = set(cfg.rule_labels())
    cache: dict[str | None, dict[str, float]] = {}

    def limits(label: str | None) -> dict[str, float]:
        key = label if label in own else None
        if key not in cache:
            values = cfg.rule_thresholds(key)
            cache[key] = {r.name: float(values.get(r.name, r.default)) for r in RULES}
        return cache[key]

    return limits


def enabled(cfg: Config) -> list[Rule]:
    """The enabled rules that have a threshold to learn."""
    names = str(cfg.get("rules", "enabled"))
    wanted = {n.strip() for n in names.split(",")}
    return [r for r in TUNABLE if "all" in wanted or r.name in wanted]


@dataclass(frozen=True)
class QueueFace:
    """One face of ``review --calibrate N``: the queue's reason for asking, and what identifies the face."""

    key: str                 # the gallery's item key (f<face id>)
    image_id: int
    face_index: int
    crop_path: str
    why: QueueItem           # the rule and threshold it sits near (rule None: drawn at random)


def catalog_queue(catalog: Catalog, cfg: Config, n: int, within: set[str] | None = None) -> list[QueueFace]:
    """The ``n`` most informative undecided faces of the catalog (``within``: only these item keys)."""
    faces = catalog.ruled_faces()
    decided = catalog.decided_faces()
    by_id = {f.face_id: f for f in faces}
    cands = [Candidate(f.face_id, f.scores, f.label) for f in faces
             if f.decision == Decision.NONE and (within is None or f"f{f.face_id}" in within)]
    picked = queue(cands, decided, limits_from(cfg), enabled(cfg), n, float(cfg.get("calibrate", "random_share")),
                   int(cfg.get("calibrate", "seed")))
    paths = catalog.crop_paths([q.face_id for q in picked])
    return [QueueFace(f"f{q.face_id}", by_id[q.face_id].image_id, by_id[q.face_id].face_index,
                      paths.get(q.face_id, ""), q)
            for q in picked]


def catalog_progress(catalog: Catalog, cfg: Config) -> list[RuleProgress]:
    """Per enabled rule: decisions so far, disagreements, and whether calibrating is worth running."""
    return progress(catalog.decided_faces(), limits_from(cfg), enabled(cfg), int(cfg.get("calibrate",
                                                                                         "min_decisions")))


@dataclass(frozen=True)
class CalibrationQueue:
    """``review --calibrate N`` (its ``--json`` shape): the faces to decide first."""

    undecided: int
    queue: list[QueueFace]


def calibration_queue(catalog: Catalog, cfg: Config, n: int) -> CalibrationQueue:
    undecided = sum(1 for f in catalog.ruled_faces() if f.decision == Decision.NONE)
    return CalibrationQueue(undecided, catalog_queue(catalog, cfg, n))


@dataclass(frozen=True)
class Disagreement:
    key: str
    crop_path: str
    decision: str            # kept | rejected
    reason: str | None       # given with the decision
    measure: str | None      # the rule's measure, beside its threshold for this face's label
    value: float | None
    threshold: float | None


@dataclass(frozen=True)
class DisagreementGroup:
    rule: str                # the rule that fired on a kept face, or the reason a rule-kept face was rejected for
    entries: list[Disagreement]


@dataclass(frozen=True)
class DisagreementReport:
    """``review --list --disagree`` (its ``--json`` shape)."""

    decided: int
    disagreeing: int         # faces in disagreement (a face two rules rejected is listed under both)
    groups: list[DisagreementGroup]


def disagreements(catalog: Catalog, cfg: Config) -> DisagreementReport:
    """Faces a person decided against the rules, grouped by rule: kept although a rule fired (under each rule
    that fired), or rejected although every rule passed (under the rule named as the reason, else "(no reason)")."""
    limits = limits_from(cfg)
    decided = catalog.decided_faces()
    groups: dict[str, list[Disagreement]] = defaultdict(list)
    total = 0
    for d in decided:
        kept_reject = d.decision == Decision.KEPT and d.rule_state.value == "reject"
        rejected_keep = d.decision == Decision.REJECTED and d.rule_state.value == "keep"
        if not (kept_reject or rejected_keep):
            continue
        total += 1
        names = list(d.reasons) if kept_reject else [d.reason if d.reason in BY_NAME else "(no reason)"]
        for name in names:
            rule = BY_NAME.get(name)
            value = d.scores.get(rule.measure) if rule else None
            groups[name].append(Disagreement(
                f"f{d.face_id}", d.crop_path, d.decision.value, d.reason, rule.measure if rule else None,
                None if value is None else float(value), limits(d.label)[name] if rule else None))
    return DisagreementReport(len(decided), total, [DisagreementGroup(k, v) for k, v in
                                                    sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))])
