"""The decision rules of a cross-validation (one per outer fold), judged on the folds they never saw.

    <cv dir>/decision.json   the target sensitivities, and per outer fold (repeat, fold, held-out patients)
                             the rule learned on its training patients only: thresholds and recalibration

Everything judged (operating points, calibration before and after recalibration, the decision curve) is
computed again from these rules and the saved out-of-fold probabilities when read, never read from a summary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..metrics import Estimate
from .calibration import judge_calibration, reliability
from .decision import DecisionRule, FoldRule
from .decision_curve import decision_curves
from .evaluation import Comparison, Fold
from .json_values import integer
from .operating_points import check_sensitivities, judge

DECISION_FILE = "decision.json"
DECISION_FORMAT = "lymphocytosis-decision/1"


@dataclass
class CVDecisions:
    sensitivities: tuple[float, ...]
    rules: list[FoldRule]
    ids: list[str]  # the patients of the CV, in the order of its probabilities

    def _per_patient(self, value) -> np.ndarray:
        """(repeats, patients): `value(rule, positions)` written at each fold's held-out patients."""
        position = {patient_id: i for i, patient_id in enumerate(self.ids)}
        repeats = max(r.fold.repeat for r in self.rules) + 1
        result = np.full((repeats, len(self.ids)), np.nan)
        for fold_rule in self.rules:
            where = [position[p] for p in fold_rule.fold.test_ids]
            result[fold_rule.fold.repeat, where] = value(fold_rule.rule, fold_rule.fold.repeat, where)
        return result

    def thresholds(self, name: str) -> np.ndarray:
        return self._per_patient(lambda rule, repeat, where: rule.operating_points.threshold(name))

    def recalibrated(self, probabilities: np.ndarray) -> np.ndarray:
        """Each held-out probability through the recalibration of the fold that held it out."""
        return self._per_patient(lambda rule, repeat, where: rule.recalibration.apply(probabilities[repeat, where]))

    @property
    def point_names(self) -> list[str]:
        return self.rules[0].rule.operating_points.names

    def to_dict(self) -> dict:
        return {"format": DECISION_FORMAT, "sensitivities": list(self.sensitivities),
                "folds": [{"repeat": r.fold.repeat, "fold": r.fold.fold, "test_ids": list(r.fold.test_ids),
                           "rule": r.rule.to_dict()} for r in self.rules]}

    @classmethod
    def from_dict(cls, data, comparison: Comparison) -> CVDecisions:
        """decision.json checked against the CV it belongs to: every fold of the design once, its held-out
        patients a partition of the CV's patients in each repeat, every rule valid with the same points."""
        if not isinstance(data, dict) or data.get("format") != DECISION_FORMAT or not isinstance(data.get("folds"), list):
            raise InputError(f"not decision rules of this tool (format {DECISION_FORMAT})")
        design, ids = comparison.design, comparison.full.ids
        sensitivities = check_sensitivities(data.get("sensitivities") or [])
        rules = [fold_rule(entry, k, ids, design) for k, entry in enumerate(data["folds"])]
        expected = {(r, k) for r in range(design.repeats) for k in range(design.folds)}
        if sorted((r.fold.repeat, r.fold.fold) for r in rules) != sorted(expected):
            raise InputError("its folds are not those of cv.json's design")
        for repeat in range(design.repeats):
            held_out = sorted(p for r in rules if r.fold.repeat == repeat for p in r.fold.test_ids)
            if held_out != sorted(ids):
                raise InputError(f"the held-out patients of repeat {repeat} are not the CV's patients")
        names = rules[0].rule.operating_points.names
        if any(r.rule.operating_points.names != names for r in rules) or len(names) != len(sensitivities) + 1:
            raise InputError("folds with other operating points than its sensitivities")
        return cls(sensitivities, rules, list(ids))


def fold_rule(entry, k: int, ids: list[str], design) -> FoldRule:
    what = f"folds[{k}]"
    if not isinstance(entry, dict) or set(entry) != {"repeat", "fold", "test_ids", "rule"}:
        raise InputError(f"{what} must hold repeat, fold, test_ids and rule")
    test_ids = entry["test_ids"]
    if not isinstance(test_ids, list) or not test_ids or not set(test_ids) <= set(ids) or len(set(test_ids)) != len(test_ids):
        raise InputError(f"{what}.test_ids must name distinct patients of the CV")
    fold = Fold(integer(entry["repeat"], f"{what}.repeat", 0, design.repeats - 1),
                integer(entry["fold"], f"{what}.fold", 0, design.folds - 1),
                tuple(p for p in ids if p not in set(test_ids)), tuple(test_ids))
    return FoldRule(fold, DecisionRule.from_dict(entry["rule"], f"{what}.rule"))


def judged(decisions: CVDecisions, comparison: Comparison, prevalence: float | None = None) -> dict:
    """Operating points, calibration before / after recalibration and the decision curve, on held-out folds."""
    full, clinical = comparison.full, comparison.clinical
    labels, raw = full.labels, full.probabilities
    recalibrated = decisions.recalibrated(raw)
    points = {}
    for name in decisions.point_names:
        thresholds = decisions.thresholds(name)
        points[name] = {"threshold": {"min": float(thresholds.min()), "median": float(np.median(thresholds)),
                                      "max": float(thresholds.max())},
                        **{k: v.to_dict() for k, v in judge(labels, raw, thresholds, prevalence).items()}}
    methods = [r.rule.recalibration.method for r in decisions.rules]
    return {
        "prevalence": {"cohort": float(labels.mean()), "given": prevalence},
        "operating_points": points,
        "calibration": {
            "raw": {k: v.to_dict() for k, v in judge_calibration(labels, raw).items()},
            "recalibrated": {k: v.to_dict() for k, v in judge_calibration(labels, recalibrated).items()},
            "methods": {m: methods.count(m) for m in sorted(set(methods))},
            "reliability": {"raw": reliability(labels, raw), "recalibrated": reliability(labels, recalibrated)},
        },
        "decision_curve": decision_curves(labels, {"model": raw, "model, recalibrated": recalibrated,
                                                   "clinical only": clinical.probabilities}),
    }


def format_decision_table(result: dict) -> str:
    """The operating points and calibration of `judged`, as the Markdown table `cv` prints."""
    given = result["prevalence"]["given"]
    lines = [f"operating points, thresholds chosen inside the training folds (prevalence {result['prevalence']['cohort']:.2f}"
             f"{f', and {given:.2f} given' if given is not None else ''}); value (95% bootstrap interval over patients)",
             "| point | sensitivity | specificity = reactive spared | sent to cytometry | PPV | NPV |"
             + (" PPV / NPV at given prevalence |" if given is not None else ""),
             "|---|---|---|---|---|---|" + ("---|" if given is not None else "")]
    for name, point in result["operating_points"].items():
        cells = [str(Estimate(**point[k])) for k in ("sensitivity", "specificity", "sent_to_cytometry", "ppv", "npv")]
        if given is not None:
            cells.append(f"{Estimate(**point['ppv_at_prevalence'])} / {Estimate(**point['npv_at_prevalence'])}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    calibration = result["calibration"]
    for key, label in (("raw", "as trained"), ("recalibrated", "recalibrated in training folds")):
        lines.append(f"calibration {label}: Brier {Estimate(**calibration[key]['brier'])}, "
                     f"ECE {Estimate(**calibration[key]['ece'])}")
    lines.append("recalibration chosen per fold: " + ", ".join(f"{m} {n}" for m, n in calibration["methods"].items()))
    return "\n".join(lines)
