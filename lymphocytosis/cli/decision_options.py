"""What `fit`, `predict` and `report` do with decision rules (thresholds, recalibration, the model card)."""

from __future__ import annotations

import logging

log = logging.getLogger("model")


def fitted_decision(args, cohort, settings, ids):
    """Thresholds and recalibration of the model trained on `ids`, from an inner CV over `ids` alone."""
    from ..errors import InputError
    from ..model.decision import DecisionRule, SavedDecision, learn_rule
    from ..model.operating_points import check_sensitivities

    try:
        rule = learn_rule(cohort, settings.spec, settings.params, ids, check_sensitivities(args.sensitivities))
    except InputError as exc:  # too few patients of a class for an inner CV: the balanced threshold only
        log.warning("no thresholds other than balanced, and no recalibration: %s", exc)
        rule = DecisionRule.default()
    for point in rule.operating_points.points:
        log.info("operating point %s: threshold %.4f", point.name, point.threshold)
    log.info("recalibration: %s (cross-validated Brier %s)", rule.recalibration.method,
             ", ".join(f"{k} {v:.4f}" for k, v in rule.recalibration_brier.items()))
    return SavedDecision.of(cohort, ids, rule)


def write_card(args, run, cohort, settings, model) -> None:
    from ..model.model_card import write_model_card

    write_model_card(args.model_dir, model, cohort, settings, args.cv_dir, run.command_line("model.py"))


def rule_of(model):
    """The model's decision rule; a model saved before rules existed has the balanced threshold only."""
    from ..model.decision import DecisionRule

    return model.decision.rule if model.decision is not None else DecisionRule.default()


def same_rule(saved, args) -> bool:
    """Were the saved CV's thresholds chosen for these target sensitivities?"""
    from ..model.operating_points import check_sensitivities

    if saved.decisions is None:  # none could be chosen (too few patients of a class in a training fold)
        return True
    return saved.decisions.sensitivities == check_sensitivities(args.sensitivities)
