"""``calibrate``: the rules' thresholds fitted to this team's review decisions, and ``--apply`` to adopt them.

Every measure is stored per face and every decision is logged, so calibrating is a join and a fit: each decided
face becomes an example per rule (:mod:`facecurate.review.calibration` says how reasons count), and
:func:`facecurate.rules.fitting.fit_rule` — the fitting ``evaluate DIR`` uses too — reports how well each rule
agrees with the person now and which threshold would agree best. A label with enough decisions of its own is
fitted on its own as well (its thresholds go to ``[rules.<label>]``). ``--apply`` writes the trusted suggestions
to facecurate.toml (the old file kept as a dated backup, the reason in a comment) and decides every face again
from its stored measures: nothing is measured twice. An orchestrator (a fit, a settings write, a stage), so it
sits beside ``evaluate`` and the pipeline.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from facecurate.catalog import Catalog, DecidedFace, RuledFace
from facecurate.errors import ConfigError
from facecurate.review.calibration import TUNABLE, counts_by_label, examples
from facecurate.rules.fitting import RuleFit, fit_rule
from facecurate.rules.registry import Rule, decide, select
from facecurate.rules.stage import LabelThresholds, RedecideSummary, enabled_rules, redecide
from facecurate.workspace import Workspace, write_thresholds


@dataclass(frozen=True)
class Applied:
    """What ``--apply`` changed: the thresholds written (section -> rule -> (old, new)), where the old file
    went, and what deciding every face again did."""

    config_file: str
    backup: str
    thresholds: dict[str, dict[str, tuple[float, float]]]
    redecided: RedecideSummary


@dataclass(frozen=True)
class Calibration:
    """Every rule (and label) against the review decisions; ``as_dict()`` is the ``calibrate --json`` shape."""

    decisions: int
    reasons_given: int
    labels: dict[str, int]             # decisions per label ("" no label)
    target_precision: float | None     # None: most agreement
    min_decisions: int
    rules: list[RuleFit]               # label None first (every label together), then per label
    applied: Applied | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _rules(ws: Workspace, names: str | None) -> list[Rule]:
    try:
        chosen = select(names) if names else enabled_rules(ws, None)
    except ValueError as exc:
        raise ConfigError(f"{exc} (from --rules)") from exc
    return [r for r in chosen if r in TUNABLE]


def fit_decisions(ws: Workspace, decided: list[DecidedFace], faces: list[RuledFace], *, rules: str | None = None,
                  label: str | None = None, target_precision: float | None = None) -> Calibration:
    """The report: one fit per rule over every decision, and per label with enough decisions of its own."""
    cfg = ws.config()
    target = float(cfg.get("calibrate", "target_precision")) if target_precision is None else target_precision
    need = int(cfg.get("calibrate", "min_decisions"))
    label_need = int(cfg.get("calibrate", "label_min_decisions"))
    resamples = int(cfg.get("calibrate", "bootstrap"))
    limits = LabelThresholds(ws)
    chosen = _rules(ws, rules)
    deciding = enabled_rules(ws, None)  # a verdict changes only if no other enabled rule still fires
    per_label = counts_by_label(decided)
    scopes: list[str | None] = [] if label is not None else [None]
    scopes += [lab for lab, n in sorted(per_label.items()) if lab and n >= label_need and label in (None, lab)]
    if label is not None and label not in scopes:
        scopes.append(label)  # asked for by name: report it, marked not enough when it is not
    fits = []
    for scope in scopes:
        base = limits(scope)
        for rule in chosen:
            ex = examples(rule, decided, scope)
            fit = fit_rule(rule, ex, base, label=scope, target_precision=target or None, resamples=resamples,
                           min_examples=need if scope is None else max(need, 1))
            if scope is not None:
                fit.enough = fit.enough and per_label.get(scope, 0) >= label_need
            fit.changes = _changes(rule, fit, faces, limits, scope, deciding)
            fits.append(fit)
    return Calibration(decisions=len(decided), reasons_given=sum(d.reason is not None for d in decided),
                       labels=per_label, target_precision=target or None, min_decisions=need, rules=fits,
                       applied=None)


def _changes(rule: Rule, fit: RuleFit, faces: list[RuledFace], limits: LabelThresholds, scope: str | None,
             deciding: list[Rule]) -> int:
    """Faces whose rule verdict (keep or reject) the suggestion would flip, the other rules unchanged. A face
    of a label with its own section is counted in that label's fit, not in the overall one."""
    if fit.suggested_threshold is None or fit.suggested_threshold == fit.threshold:
        return 0
    n = 0
    own = limits.labels
    for f in faces:
        face_scope = f.label if f.label in own else None
        if (scope is None and face_scope is not None) or (scope is not None and f.label != scope):
            continue
        trial = dict(limits(f.label))
        before = bool(decide(f.scores, trial, deciding))
        trial[rule.name] = fit.suggested_threshold
        n += before != bool(decide(f.scores, trial, deciding))
    return n


def calibrate(ws: Workspace, catalog: Catalog, *, rules: str | None = None, label: str | None = None,
              target_precision: float | None = None, apply: bool = False) -> Calibration:
    """Fit the thresholds to the review decisions; with ``apply``, adopt the trusted suggestions and re-decide."""
    result = fit_decisions(ws, catalog.decided_faces(), catalog.ruled_faces(), rules=rules, label=label,
                           target_precision=target_precision)
    if not apply:
        return result
    adopt: dict[str | None, dict[str, float]] = {}
    old: dict[str, dict[str, tuple[float, float]]] = {}
    for fit in result.rules:
        new = fit.suggested_threshold
        if not fit.enough or new is None or new == fit.threshold:
            continue
        adopt.setdefault(fit.label, {})[fit.rule] = round(new, 6)
        old.setdefault(fit.label or "", {})[fit.rule] = (fit.threshold, round(new, 6))
    how = f"precision >= {result.target_precision:g}" if result.target_precision else "most agreement"
    note = f"fitted to {result.decisions} review decisions ({result.reasons_given} with a reason), {how}"
    backup = write_thresholds(ws, adopt, note) if adopt else None
    summary = redecide(ws, catalog)
    return dataclasses.replace(result, applied=Applied(str(ws.config_path), str(backup or ""), old, summary))
