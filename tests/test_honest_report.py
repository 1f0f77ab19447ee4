"""The report never overstates: after cv, tune, fit, predict and report (a user's order), the headline says
"optimistic" beside the default settings' CV of the same folds, or gives the nested estimate once `tune --nested`
measured one; the user's earlier CV is still there, and the report says which saved CV it used and why it ran one.

Runs on hand-made embeddings (`write_fake_embeddings`: 60 training patients, enough for tuned
trees to split) with 3 folds x 1 repeat.
"""

from __future__ import annotations

import re
from pathlib import Path

import model as model_cli
import tune as tune_cli
from conftest import flatten_cv, run_main, write_fake_embeddings
from lymphocytosis.model.evaluation import CVDesign
from lymphocytosis.model.results import load_cv
from lymphocytosis.model.saved_runs import candidates, results_key
from lymphocytosis.model.tuned_params import Settings
from lymphocytosis.report.headline import OPTIMISTIC

DESIGN = ["--folds", "3", "--repeats", "1", "--seed", "0"]


def run(main, *argv) -> str:
    result = run_main(main, [str(a) for a in argv])
    assert result.code == 0, result.stderr
    return result.stdout


def in_short(summary: str) -> str:
    return summary.split("## In short", 1)[1].split("\n## ", 1)[0]


def test_report_after_tuning_is_optimistic_or_nested_and_keeps_the_earlier_cv(tmp_path):
    embeddings = write_fake_embeddings(tmp_path / "artifacts" / "dlmi", n_train=60)
    home, data = embeddings.parent, ["--embeddings", str(embeddings)]
    run(model_cli.main, "cv", *data, "--params", "default", *DESIGN, "-q")
    default_dir = home / "cv" / results_key(Settings(), CVDesign(3, 1, 0))
    assert (default_dir / "cv.json").is_file()
    made = (default_dir / "cv.json").stat().st_mtime_ns

    run(tune_cli.main, *data, *DESIGN, "--trials", "3", "-q")
    assert (home / "best_params.json").is_file()
    run(model_cli.main, "fit", *data, "-q")
    run(model_cli.main, "predict", *data, "-q")
    out = run(model_cli.main, "report", *data, *DESIGN, "--patients", "none")

    # the user's default-settings CV is still there, untouched, and was read (not recomputed) for the comparison
    assert (default_dir / "cv.json").stat().st_mtime_ns == made
    assert f"the default settings, same folds: the saved cross-validation in {default_dir}" in out
    assert "running it" in out and "made with the default settings" in out  # why the tuned CV had to run
    assert len(candidates(home / "cv")) == 2  # one folder per settings, none replaced
    summary = (home / "report" / "summary.md").read_text(encoding="utf-8")
    lede = summary.split("## In short", 1)[0]
    default = load_cv(default_dir).comparison.full.summary.balanced_accuracy
    for part in (lede, in_short(summary)):
        assert OPTIMISTIC in part, part
        assert f"The default settings reach {default} on the same folds" in part
    assert "tune --nested" in lede and "optimistic" in (home / "report" / "index.html").read_text(encoding="utf-8")

    out = run(tune_cli.main, *data, *DESIGN, "--nested", "--trials", "2", "--outer-folds", "3", "-q")
    nested = sorted((home / "nested").glob("*.json"))
    assert len(nested) == 1 and str(nested[0]) in out
    out = run(model_cli.main, "report", *data, *DESIGN, "--patients", "none")
    assert f"headline from the nested cross-validation in {nested[0]}" in out
    assert "settings in use: the saved cross-validation in" in out and "running it" not in out  # both CVs reused
    summary = (home / "report" / "summary.md").read_text(encoding="utf-8")
    headline = re.search(r"\*\*Balanced accuracy (\d\.\d{3} ± \d\.\d{3}) on patients the tuning never saw\.\*\*",
                         summary.split("## In short", 1)[0])
    assert headline, summary[:1500]
    assert OPTIMISTIC in in_short(summary)  # the tuned CV's own numbers are still called optimistic


def test_a_report_of_default_settings_makes_no_claim_of_tuning(tmp_path):
    embeddings = write_fake_embeddings(tmp_path / "artifacts" / "dlmi", n_train=60)
    out = run(model_cli.main, "report", "--embeddings", embeddings, "--params", "default", *DESIGN, "--patients", "none")
    assert "none saved in" in out  # said why it ran the CV
    summary = (embeddings.parent / "report" / "summary.md").read_text(encoding="utf-8")
    assert "optimistic" not in summary and "out-of-fold" in summary


def test_a_plain_cv_dir_of_an_earlier_version_is_still_read(tmp_path):
    """Results saved straight into --cv-dir (cv.json at its top) fit a report of the same settings and folds."""
    embeddings = write_fake_embeddings(tmp_path / "artifacts" / "dlmi", n_train=60)
    home = embeddings.parent
    run(model_cli.main, "cv", "--embeddings", embeddings, "--params", "default", *DESIGN, "-q")
    flatten_cv(home / "cv")  # the layout an earlier version wrote
    out = run(model_cli.main, "report", "--embeddings", embeddings, "--params", "default", *DESIGN, "--patients", "none")
    assert f"the saved cross-validation in {home / 'cv'}" in out
    other = run(model_cli.main, "report", "--embeddings", embeddings, "--params", "default", "--folds", "3",
                "--repeats", "2", "--patients", "none")
    assert "3-fold x 1 repeats, seed 0 (this run: 3-fold x 2 repeats, seed 0)" in other  # what differed
    assert (home / "cv" / "cv.json").is_file()  # kept
    assert Path(home / "cv" / results_key(Settings(), CVDesign(3, 2, 0)) / "cv.json").is_file()
