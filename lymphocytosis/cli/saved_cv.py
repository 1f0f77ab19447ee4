"""Saved cross-validations as the commands use them: run one (with its fold rules) into its folder under
--cv-dir (model/saved_runs.py: one folder per settings and design), reuse the saved one that fits a report, or
set a stain-normalised CV beside it."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from ..invocation import command
from .common import Run
from .decision_options import same_rule

if TYPE_CHECKING:
    from ..model.results import SavedCV

log = logging.getLogger("model")


def warn_if_cannot_separate(comparison) -> None:
    """A fold model that gives every patient the same probability decides nothing; say so, and why if known."""
    from ..model.params import too_few_patients

    stuck = [f for f in comparison.full.folds if f.model is not None and not f.model.separates]
    if stuck:
        reason = too_few_patients(len(stuck[0].fold.train_ids), stuck[0].model.params)
        log.warning("in %d of %d folds the model gave every patient the same probability: it cannot separate the "
                    "classes there%s", len(stuck), len(comparison.full.folds), f" ({reason})" if reason else "")


def design_of(args):
    from ..model.evaluation import CVDesign

    return CVDesign(args.folds, args.repeats, args.seed)


def run_cv(args, run: Run, cohort, settings, directory: Path) -> SavedCV:
    """Cross-validate with the operating points of each training fold, save the results folder (models and
    explanations kept) in `directory`, and return the saved results."""
    from ..model.decision import learn_fold_rules
    from ..model.decision_results import CVDecisions
    from ..model.evaluation import compare
    from ..model.explanations import explain
    from ..model.operating_points import check_sensitivities
    from ..model.results import load_cv, save_cv

    started = time.perf_counter()
    comparison = compare(cohort, settings.spec, settings.params, design_of(args), keep_models=True,
                         progress=run.progress)
    warn_if_cannot_separate(comparison)
    sensitivities = check_sensitivities(args.sensitivities)
    try:
        rules = learn_fold_rules(cohort, settings.spec, settings.params, [r.fold for r in comparison.full.folds],
                                 args.seed, sensitivities, progress=run.progress)
        decisions = CVDecisions(sensitivities, rules, comparison.full.ids)
    except InputError as exc:
        log.warning("no operating points or recalibration in this cross-validation: %s", exc)
        decisions = None
    directory = save_cv(directory, comparison, explain(comparison.full), settings, cohort,
                        time.perf_counter() - started, decisions)
    log.info("wrote cross-validation results to %s", directory)
    return load_cv(directory)


def saved_or_run(args, run: Run, cohort, settings, design, what: str) -> SavedCV:
    """The saved CV of these settings and folds, said which; else run (and save) it, said why. A saved CV whose
    thresholds were chosen for other target sensitivities (--sensitivities) is run again into its folder."""
    from ..model.saved_runs import find_results, results_dir

    found = find_results(args.cv_dir, cohort, settings, design)
    if found.saved is not None and same_rule(found.saved, args):
        print(f"report: {what}: the saved cross-validation in {found.directory}")
        return found.saved
    directory = found.directory
    if found.saved is not None:
        why = f"{found.directory}: thresholds for other target sensitivities"
        directory = results_dir(args.cv_dir, settings, design)  # never the plain layout of an earlier version
    else:
        why = "; ".join(found.rejected) if found.rejected else f"none saved in {args.cv_dir}"
    print(f"report: {what}: no saved cross-validation of these settings and folds ({why}); running it into "
          f"{directory} (saved results of other settings or folds are kept)")
    return run_cv(args, run, cohort, settings, directory)


def load_stain_cv(directory: Path, cohort, settings, design):
    """Saved CV results to set beside the report's: the same patients, folds and settings, or refused (before any
    cross-validation runs)."""
    from ..evidence import require_stain_normalised
    from ..model.results import load_cv
    from ..model.saved_runs import results_dir

    plain = (Path(directory) / "cv.json").is_file()  # a results folder, or a --cv-dir of per-settings folders
    folder = Path(directory) if plain else results_dir(directory, settings, design)
    if not (folder / "cv.json").is_file():
        raise InputError(f"--stain-cv {directory}: no cross-validation of the report's settings and folds there (run "
                         f"`{command('cv')}` on the stain-normalised embeddings with the same options)")
    stained = load_cv(folder)
    require_stain_normalised(directory, stained.provenance, cohort.provenance)
    same = (stained.fingerprint == cohort.fingerprint and stained.comparison.design == design
            and stained.settings.spec == settings.spec and stained.settings.params == settings.params)
    if not same:
        raise InputError(f"--stain-cv {directory}: cross-validation of other patients, folds or settings than the "
                         f"report's (run `{command('cv')}` on the stain-normalised embeddings with the same options)")
    return stained
