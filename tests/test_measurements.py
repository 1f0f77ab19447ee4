"""Measurement files (extract.py --measure): written like embeddings files, read as one more feature set, and
used by stage 2 when switched on."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, run_main
from lymphocytosis.cli.extract import main as extract_main
from lymphocytosis.cli.model import main as model_main
from lymphocytosis.contract.store import load_bags, read_provenance
from lymphocytosis.errors import InputError
from lymphocytosis.extract.measuring import measure_dataset, measurement_provenance
from lymphocytosis.extract.morphometry import MeasurementSettings, morphometry_names
from lymphocytosis.extract.parts import PartsFolder, assemble
from lymphocytosis.model.classifier import FittedModel
from lymphocytosis.model.cohort import load_cohort
from lymphocytosis.model.evaluation import cross_validate, repeated_folds
from lymphocytosis.model.feature_spec import FeatureSpec
from lymphocytosis.model.measurements import settings_for, with_morphometry
from lymphocytosis.model.persistence import load_model, save_model
from lymphocytosis.model.subgroups import hard_mask, paired
from lymphocytosis.model.tables import MEASUREMENT
from lymphocytosis.model.tuned_params import Settings

QUICK = {"num_iterations": 20, "n_models": 1}


@pytest.fixture(scope="session")
def measured(synthetic_root, tmp_path_factory) -> Path:
    """Morphometry of `synthetic_root`, measured once in one process. Read-only."""
    out = tmp_path_factory.mktemp("measured") / "morphometry.h5"
    summary = measure_dataset(synthetic_root, out, MeasurementSettings(), workers=1)
    assert summary.n_patients == 15 and not Path(f"{out}.parts").exists()
    return out


def fake_measurements(embeddings: Path, out: Path, dims: int = 4, missing_every: int = 5) -> Path:
    """A measurement file for the images of a (fake) embeddings file: its first `dims` columns (which carry the
    label's signal), with some cells whose nucleus was not found (all NaN) and some missing one quantity, as
    real segmentations give."""
    settings = MeasurementSettings()
    provenance, bags = load_bags(embeddings)
    names = [f"quantity_{k}" for k in range(dims)]
    measured = {}
    for patient_id, bag in bags.items():
        values = bag.embeddings[:, :dims].astype(np.float64).copy()
        values[2::missing_every] = np.nan  # the first two cells of each patient stay complete
        values[3::missing_every, -1] = np.nan
        measured[patient_id] = replace(bag, embeddings=values)  # same images and fingerprints
    assemble(out, list(bags), measured.__getitem__, dims, {**measurement_provenance(settings), "weights_sha256": "fake"},
             {"dataset_root": provenance["dataset_root"], "dimension_names": json.dumps(names)})
    return out


def test_measurement_file_has_the_embeddings_format_provenance_and_names(measured, synthetic_embeddings):
    provenance = read_provenance(measured)
    assert provenance["model"] == "morphometry" and provenance["features"] == "morphometry/1"
    assert json.loads(provenance["preprocessing"]) == {"kind": "morphometry", "pixel_size_um": None, "stain": "none",
                                                       "version": "1"}
    assert json.loads(provenance["dimension_names"]) == morphometry_names("px")
    _, bags = load_bags(measured)
    _, embedded = load_bags(synthetic_embeddings)
    for patient_id, bag in bags.items():  # the same images, in the same order, one row each
        assert bag.filenames == embedded[patient_id].filenames
        assert bag.embeddings.shape == (len(bag.filenames), len(morphometry_names()))
    nucleus_area = np.concatenate([bag.embeddings[:, 0] for bag in bags.values()])
    assert np.isfinite(nucleus_area).mean() > 0.9 and np.nanmin(nucleus_area) > 500  # drawn nuclei: r >= ~35 px


def test_same_command_is_a_no_op_and_other_settings_are_refused(measured, synthetic_root, tmp_path):
    assert measure_dataset(synthetic_root, measured, MeasurementSettings(), workers=1).already_complete
    with pytest.raises(InputError, match="exists with other settings"):
        measure_dataset(synthetic_root, measured, MeasurementSettings(pixel_size_um=0.2), workers=1)


def test_parallel_and_resumed_measuring_give_the_same_file(measured, synthetic_root, tmp_path):
    out = tmp_path / "m.h5"
    parts = PartsFolder(out, measurement_provenance(MeasurementSettings()), len(morphometry_names()), tmp_path / "other")
    del parts  # an interrupted run of another "dataset" must be refused, not mixed
    with pytest.raises(InputError, match="another dataset"):
        measure_dataset(synthetic_root, out, MeasurementSettings(), workers=2)
    measure_dataset(synthetic_root, out, MeasurementSettings(), workers=2, overwrite=True)
    _, ours = load_bags(out)
    _, reference = load_bags(measured)
    for patient_id, bag in reference.items():
        np.testing.assert_array_equal(ours[patient_id].embeddings, bag.embeddings)


def test_extract_cli_measures_with_units_and_stain(synthetic_root, tmp_path, run_cli):
    out = tmp_path / "colour.h5"
    result = run_cli(extract_main, ["--root", str(synthetic_root), "--out", str(out), "--measure", "colour",
                                    "--stain", "slide", "--workers", "1"])
    assert result.code == 0, result.stderr
    provenance = read_provenance(out)
    assert provenance["model"] == "colour" and json.loads(provenance["preprocessing"])["stain"] == "slide"
    bad = run_cli(extract_main, ["--root", str(synthetic_root), "--out", str(tmp_path / "x.h5"), "--measure",
                                 "morphometry", "--pixel-size", "0"])
    assert_one_line_error(bad, "--pixel-size")
    ignored = run_cli(extract_main, ["--root", str(synthetic_root), "--out", str(tmp_path / "x.h5"), "--measure",
                                     "colour", "--tta", "--crop", "64"])
    assert_one_line_error(ignored, "--crop, --tta", "embedding options")
    unitless = run_cli(extract_main, ["--root", str(synthetic_root), "--out", str(tmp_path / "x.h5"), "--pixel-size", "0.2"])
    assert_one_line_error(unitless, "--pixel-size applies to --measure only")
    assert not (tmp_path / "x.h5").exists()


def test_stage2_runs_with_morphometry_switched_on(synthetic_embeddings, measured):
    cohort = load_cohort([synthetic_embeddings, measured])
    assert [s.measured for s in cohort.sets] == [False, True] and cohort.primary.name == "tf_efficientnet_lite0"
    spec = replace(with_morphometry(FeatureSpec()), measurement_score=True)
    folds = repeated_folds(cohort.labelled_ids, cohort.labels(cohort.labelled_ids), 3, 1, 0)
    result = cross_validate(cohort, spec, {**Settings().params, **QUICK}, folds, keep_models=True)
    assert np.isfinite(result.probabilities).all()
    columns = result.folds[0].model.columns
    measured_columns = [c for c in columns if c.family == MEASUREMENT]
    assert [c.attribute for c in measured_columns] == morphometry_names("px")
    assert len({c.key for c in columns}) == len(columns)
    assert any(c.family == "cell_score" and c.backbone == "morphometry" for c in columns)


def test_measurement_score_ignores_missing_cells_and_saved_models_reproduce(fake_embeddings, tmp_path):
    measurements = fake_measurements(fake_embeddings, tmp_path / "fake-morphometry.h5")
    cohort = load_cohort([fake_embeddings, measurements])
    spec = FeatureSpec(cell_score=False, measurement_stats=("q50", "std"), measurement_score=True)
    model = FittedModel.fit(cohort, cohort.labelled_ids, spec, {**Settings().params, **QUICK})
    table = model.features_of(cohort, cohort.ids)
    assert np.isfinite(table.frame.filter(like="cell_score").to_numpy()).all()
    patient_id = next(p for p in cohort.labelled_ids if len(cohort.sets[1].bags[p]) >= 4)
    scores = table.cell_scores["morphometry"][patient_id]  # in image order, NaN for the incomplete cells
    assert len(scores) == len(cohort.sets[1].bags[patient_id])
    assert np.isnan(scores[2:4]).all() and np.isfinite(scores[:2]).all()
    save_model(model, tmp_path / "model")
    again = load_model(tmp_path / "model")
    np.testing.assert_allclose(again.predict_proba(cohort, cohort.ids).probabilities,
                               model.predict_proba(cohort, cohort.ids).probabilities)


def test_defaults_switch_measurements_on_only_when_given(fake_embeddings, tmp_path):
    measurements = fake_measurements(fake_embeddings, tmp_path / "m.h5")
    plain, both = load_cohort(fake_embeddings), load_cohort([fake_embeddings, measurements])
    assert settings_for(plain, Settings()) == Settings()
    assert settings_for(both, Settings()).spec == with_morphometry(FeatureSpec())
    tuned = Settings(source="best_params.json")
    assert settings_for(both, tuned) is tuned


def test_model_cli_cv_with_measurements(fake_embeddings, tmp_path):
    measurements = fake_measurements(fake_embeddings, tmp_path / "m.h5")
    result = run_main(model_main, ["cv", "--embeddings", str(fake_embeddings), "--measurements", str(measurements),
                                   "--params", "default", "--folds", "3", "--repeats", "1", "--cv-dir", str(tmp_path / "cv")])
    assert result.code == 0, result.stderr
    (folder,) = [p for p in (tmp_path / "cv").iterdir() if p.is_dir()]  # one folder per settings and folds
    document = json.loads((folder / "cv.json").read_text())
    assert document["settings"]["feature_spec"]["measurement_stats"] == ["q50"]
    assert set(document["provenance"]) == {"fake-backbone", "morphometry"}


def test_hard_subgroup_and_paired_differences(fake_embeddings):
    cohort = load_cohort(fake_embeddings)
    ids = cohort.labelled_ids
    mask = hard_mask(cohort, ids)
    assert mask.sum() == (cohort.clinical.loc[ids, "lymph_count"] <= 8).sum() and 0 < mask.sum() < len(ids)
    folds = repeated_folds(ids, cohort.labels(ids), 3, 2, 0)
    params = {**Settings().params, **QUICK}
    full = cross_validate(cohort, FeatureSpec(), params, folds)
    clinical = cross_validate(cohort, FeatureSpec().clinical_only(), params, folds)
    comparison = paired(full, clinical, mask)
    per_repeat = [full.probabilities[r][mask] for r in range(2)]
    assert comparison.difference.balanced_accuracy.mean == pytest.approx(
        comparison.model.balanced_accuracy.mean - comparison.reference.balanced_accuracy.mean)
    assert len(per_repeat[0]) == mask.sum()
    assert paired(full, full).difference.roc_auc.std == 0.0


def test_report_shows_the_hard_subgroup_and_what_survives_stain_normalisation(fake_embeddings, tmp_path):
    from conftest import write_fake_embeddings

    stained = write_fake_embeddings(tmp_path / "stained", seed=0, provenance={
        "preprocessing": '{"crop": 64, "input_size": 64, "stain": "slide"}'})
    design = ["--params", "default", "--folds", "3", "--repeats", "2"]
    for embeddings, cv in ((fake_embeddings, tmp_path / "cv"), (stained, tmp_path / "cv-stained")):
        assert run_main(model_main, ["cv", "--embeddings", str(embeddings), "--cv-dir", str(cv), *design]).code == 0
    report = ["report", "--embeddings", str(fake_embeddings), "--cv-dir", str(tmp_path / "cv"), *design,
              "--patients", "none"]
    plain = run_main(model_main, [*report, "--out-dir", str(tmp_path / "plain")])
    assert plain.code == 0, plain.stderr
    text = (tmp_path / "plain" / "summary.md").read_text(encoding="utf-8")
    assert "hard subgroup: count ≤ 8" in text and "survives stain normalisation" not in text
    both = run_main(model_main, [*report, "--out-dir", str(tmp_path / "both"), "--stain-cv", str(tmp_path / "cv-stained")])
    assert both.code == 0, both.stderr
    text = (tmp_path / "both" / "summary.md").read_text(encoding="utf-8")
    assert "--stain slide" in text and "survives stain normalisation" in text
    other = run_main(model_main, [*report[:-6], "--folds", "3", "--repeats", "1", "--patients", "none",
                                  "--out-dir", str(tmp_path / "x"), "--stain-cv", str(tmp_path / "cv-stained")])
    assert_one_line_error(other, "--stain-cv")


def test_measured_quantities_are_named_for_readers_and_tuned_when_given(fake_embeddings, tmp_path):
    import optuna

    from lymphocytosis.model.tables import FeatureColumn
    from lymphocytosis.model.tuning import create_study, run_study, settings_from_trial
    from lymphocytosis.report.naming import readable_name

    column = FeatureColumn(MEASUREMENT, attribute="nucleus_area_um2", backbone="morphometry", statistic="q50")
    assert readable_name(column) == "nucleus area (µm²), median [morphometry]"
    assert readable_name(replace(column, attribute="nc_ratio")) == "N/C ratio, median [morphometry]"
    cohort = load_cohort([fake_embeddings, fake_measurements(fake_embeddings, tmp_path / "m.h5")])
    folds = repeated_folds(cohort.labelled_ids, cohort.labels(cohort.labelled_ids), 3, 1, 0)
    study = create_study("measured", optuna.storages.InMemoryStorage(), 0)
    run_study(study, cohort, folds, 2)
    assert all("measurements" in t.params for t in study.trials)
    spec = settings_from_trial(study.best_trial).spec
    assert spec.measurement_stats or spec.measurement_score
