"""Fitting a rule's threshold to labelled examples: the one module behind ``evaluate`` and ``calibrate``.

``evaluate DIR`` labels faces by folder, ``calibrate`` by a person's review decisions; both end as the same
question — for each rule, how well does it agree with the labels at its threshold in force, and which threshold
would agree best — so both call :func:`fit_rule` and both print the same :class:`RuleFit` record (one table in
the output layer, one ``--json`` shape). Pure functions over measures: the stored ``faces.scores`` are all a
fit needs, so no face is measured again.

A candidate threshold is judged exactly as the filter stage would judge it: :meth:`Rule.fires` with the
candidate in place of the rule's threshold (preconditions such as "a wink is not also closed eyes" included).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

from facecurate.rules.registry import Measures, Rule

BOOTSTRAP_SEED = 17     # a fixed seed: the same decisions always print the same interval
MAX_CANDIDATES = 400    # thresholds tried per rule at most (quantiles of the observed values beyond that)


@dataclass(frozen=True)
class Example:
    """One labelled face: its stored measures and whether the rule *should* fire on it."""

    measures: Measures
    positive: bool


@dataclass
class RuleFit:
    """One rule against the labels: agreement at the threshold in force, and the threshold that fits best.

    ``precision``/``recall``: of "this rule fires" against "the label says reject for this rule";
    ``precision_low``/``_high`` (and recall's) a 90% bootstrap interval over the examples (None below 2 of them);
    ``changes``: faces (of every face the caller decided again, not just the labelled ones) whose rule verdict
    the suggested threshold would flip, filled in by the caller."""

    rule: str
    label: str | None           # None: every label together
    threshold: float
    labelled: int               # examples the fit saw (faces with a label or a decision)
    positives: int
    fired_count: int
    true_positives: int
    precision: float | None
    recall: float | None
    f1: float | None
    agreement: float | None     # share of examples where rule and label agree
    precision_low: float | None = None
    precision_high: float | None = None
    recall_low: float | None = None
    recall_high: float | None = None
    suggested_threshold: float | None = None
    suggested_precision: float | None = None
    suggested_recall: float | None = None
    suggested_agreement: float | None = None
    method: str = "agreement"   # how the suggestion was chosen: "agreement" or "precision>=P"
    changes: int | None = None
    enough: bool = True         # as many examples as the caller asks before it trusts a suggestion
    by_label: dict[str, int] = field(default_factory=dict)  # where it fired: label -> examples (evaluate)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def _prf(tp: int, fired: int, positives: int) -> tuple[float | None, float | None, float | None]:
    p, r = ratio(tp, fired), ratio(tp, positives)
    return p, r, (2 * p * r / (p + r)) if p and r else None


def _interval(fired: Sequence[bool], positive: Sequence[bool], resamples: int
              ) -> tuple[float | None, float | None, float | None, float | None]:
    """90% percentile bootstrap of precision and recall (resampling examples with replacement)."""
    n = len(fired)
    if n < 2 or resamples <= 0:
        return None, None, None, None
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    f = np.asarray(fired, dtype=bool)
    y = np.asarray(positive, dtype=bool)
    ps: list[float] = []
    rs: list[float] = []
    for start in range(0, resamples, 250):  # 250 resamples at a time: bounded memory at any n
        idx = rng.integers(0, n, size=(min(250, resamples - start), n))
        fs, ys = f[idx], y[idx]
        tp = (fs & ys).sum(axis=1)
        fired_n, pos_n = fs.sum(axis=1), ys.sum(axis=1)
        ps += (tp[fired_n > 0] / fired_n[fired_n > 0]).tolist()
        rs += (tp[pos_n > 0] / pos_n[pos_n > 0]).tolist()

    def cut(values: list[float]) -> tuple[float | None, float | None]:
        if not values:
            return None, None
        values.sort()
        return values[int(0.05 * (len(values) - 1))], values[int(0.95 * (len(values) - 1))]

    return (*cut(ps), *cut(rs))


def candidates(rule: Rule, values: Sequence[float], current: float) -> list[float]:
    """Thresholds worth trying: the current one, and one between each pair of neighbouring observed values
    (the only places a verdict can change), thinned to quantiles when there are very many."""
    distinct = sorted(set(values))
    if not distinct:
        return [current]
    cuts = [(a + b) / 2 for a, b in pairwise(distinct)]
    # past both ends: 'below' fires strictly under the limit, 'above' at or above it
    cuts += [distinct[0] - 1e-6, distinct[-1] + 1e-6] if rule.direction == "below" else [distinct[0],
                                                                                          distinct[-1] + 1e-6]
    cuts.sort()
    if len(cuts) > MAX_CANDIDATES:
        step = (len(cuts) - 1) / (MAX_CANDIDATES - 1)
        cuts = [cuts[round(i * step)] for i in range(MAX_CANDIDATES)]
    return sorted({round(c, 6) for c in cuts} | {current})


def verdicts(rule: Rule, examples: Sequence[Example], limits: Mapping[str, float], threshold: float) -> list[bool]:
    """Whether the rule fires on each example with ``threshold`` in place of its own."""
    trial = dict(limits)
    trial[rule.name] = threshold
    return [rule.fires(e.measures, trial) for e in examples]


def fit_rule(rule: Rule, examples: Sequence[Example], limits: Mapping[str, float], *, label: str | None = None,
             target_precision: float | None = None, resamples: int = 1000, min_examples: int = 1) -> RuleFit:
    """Agreement at the threshold in force and the best threshold for these examples.

    ``target_precision`` None or 0: the threshold with the most agreement (ties: the one nearest the threshold in
    force, so a fit moves a threshold no further than the examples ask); else the best recall among thresholds
    reaching that precision (ties: nearest the current one), None when none does."""
    current = float(limits[rule.name])
    positive = [e.positive for e in examples]
    fired = verdicts(rule, examples, limits, current)
    tp = sum(f and y for f, y in zip(fired, positive, strict=True))
    npos = sum(positive)
    p, r, f1 = _prf(tp, sum(fired), npos)
    agree = ratio(sum(f == y for f, y in zip(fired, positive, strict=True)), len(examples))
    fit = RuleFit(rule=rule.name, label=label, threshold=current, labelled=len(examples), positives=npos,
                  fired_count=sum(fired), true_positives=tp, precision=p, recall=r, f1=f1, agreement=agree,
                  enough=len(examples) >= min_examples)
    fit.precision_low, fit.precision_high, fit.recall_low, fit.recall_high = _interval(fired, positive, resamples)
    use_target = bool(target_precision)
    fit.method = f"precision>={target_precision:g}" if use_target else "agreement"
    values = [x for e in examples if (x := e.measures.get(rule.measure)) is not None and x == x]
    if not examples or (not npos and use_target):
        return fit
    best: tuple[tuple[float, float], float, float | None, float | None, float] | None = None
    for limit in candidates(rule, values, current):
        flags = verdicts(rule, examples, limits, limit)
        t = sum(f and y for f, y in zip(flags, positive, strict=True))
        cp, cr, _ = _prf(t, sum(flags), npos)
        ca = sum(f == y for f, y in zip(flags, positive, strict=True)) / len(examples)
        if use_target:
            if cp is None or target_precision is None or cp < target_precision:
                continue
            key = (cr or 0.0, -abs(limit - current))
        else:
            key = (ca, -abs(limit - current))
        if best is None or key > best[0]:
            best = (key, limit, cp, cr, ca)
    if best is not None:
        _, fit.suggested_threshold, fit.suggested_precision, fit.suggested_recall, fit.suggested_agreement = best
    return fit
