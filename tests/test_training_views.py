"""Training views: the random acquisition changes (augmentation.py), their embeddings beside the embeddings file
(extract.py), and the cell score's invariance penalty (cell_score.Views) that learns from them."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from PIL import Image
from test_ridge_statistics import integer_bags, statistics_ridge

from conftest import small_settings
from lymphocytosis import augmentation
from lymphocytosis.contract.provenance import TRAINING_VIEW, identity
from lymphocytosis.contract.store import load_bags, views_path
from lymphocytosis.errors import InputError
from lymphocytosis.model.cell_score import CellStatistics, Views
from lymphocytosis.model.features import FittedFeatures
from lymphocytosis.model.tuned_params import Settings


def test_a_view_depends_on_the_image_and_the_seed_only(synthetic_cell_images):
    images = [Image.open(path).convert("RGB") for path in synthetic_cell_images[:12]]
    first = [np.asarray(augmentation.random_view(image, 1)) for image in images]
    again = [np.asarray(augmentation.random_view(image.copy(), 1)) for image in reversed(images)][::-1]
    other = [np.asarray(augmentation.random_view(image, 2)) for image in images]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert all(a.shape == np.asarray(image).shape and a.dtype == np.uint8 for a, image in zip(first, images))
    assert sum(not np.array_equal(a, np.asarray(image)) for a, image in zip(first, images)) >= 9  # 1/32 unchanged
    assert sum(not np.array_equal(a, b) for a, b in zip(first, other)) >= 9


def test_the_recipe_records_the_seed_and_every_range():
    recipe = json.loads(augmentation.recipe(7))
    assert recipe["seed"] == 7 and recipe["version"] == augmentation.VERSION
    assert recipe["jpeg_quality"] == list(augmentation.JPEG_QUALITY) and recipe["zoom"] == list(augmentation.ZOOM)
    assert augmentation.recipe(7) != augmentation.recipe(8)


def changed(bags: dict, seed: int) -> dict:
    """Small-integer changes along dimension 1 only: exact in float32, like the bags."""
    rng = np.random.default_rng(seed)
    out = {}
    for patient_id, bag in bags.items():
        delta = np.zeros_like(bag)
        delta[:, 1] = rng.integers(-2, 3, size=len(bag))
        out[patient_id] = [bag + delta]
    return out


def penalised_ridge(bags, views, labels, alpha, weight):
    """The documented objective in float64 on the cells: the class- and patient-balanced ridge of the label,
    plus `weight` x the balanced mean squared change of the score between a cell and its views, with every
    dimension standardised by its spread (cells' and changes' together) and penalised by alpha."""
    present = [(p, int(label)) for p, label in zip(bags, labels) if len(bags[p])]
    per_class = np.bincount([label for _, label in present], minlength=2)
    w = {p: 0.5 / per_class[label] / len(bags[p]) for p, label in present}
    x = np.concatenate([bags[p] for p, _ in present]).astype(np.float64)
    cell_w = np.concatenate([np.full(len(bags[p]), w[p]) for p, _ in present])
    y = np.concatenate([np.full(len(bags[p]), label, float) for p, label in present])
    mean = cell_w @ x
    cov = (x - mean).T @ ((x - mean) * cell_w[:, None])
    for p, _ in present:
        for view in views[p]:
            d = view.astype(np.float64) - bags[p]
            cov += weight / len(views[p]) * w[p] * d.T @ d
    scale = np.sqrt(np.diag(cov))
    system = cov / np.outer(scale, scale) + alpha * np.eye(len(scale))
    beta = np.linalg.solve(system, ((x - mean).T @ (cell_w * (y - cell_w @ y))) / scale) / scale
    return beta, float(cell_w @ y - mean @ beta)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("weight", [0.25, 1.0, 16.0])
def test_the_penalised_ridge_from_statistics_is_the_direct_one(seed, weight):
    bags, labels = integer_bags(seed)
    views = changed(bags, seed)
    fitted = statistics_ridge(CellStatistics(bags, views=Views(views, weight)), bags, labels, 0.1)
    beta, intercept = penalised_ridge(bags, views, labels, 0.1, weight)
    np.testing.assert_allclose(fitted.beta, beta, rtol=2e-4, atol=1e-6)
    assert fitted.intercept == pytest.approx(intercept, abs=1e-5)


def test_without_views_or_weight_the_statistics_are_bit_identical():
    bags, labels = integer_bags(5)
    plain = CellStatistics(bags)
    for other in (CellStatistics(bags, views=None), CellStatistics(bags, views=Views(changed(bags, 5), 0.0))):
        assert np.array_equal(plain.grams, other.grams)
        assert np.array_equal(statistics_ridge(plain, bags, labels, 0.1).beta, statistics_ridge(other, bags, labels, 0.1).beta)


def test_over_the_memory_budget_the_penalty_is_summed_from_the_cells():
    bags, labels = integer_bags(2)
    views = Views(changed(bags, 2), 4.0)
    kept, summed = CellStatistics(bags, views=views), CellStatistics(bags, max_bytes=0, views=views)
    assert summed.grams is None
    np.testing.assert_allclose(statistics_ridge(summed, bags, labels, 0.1).beta,
                               statistics_ridge(kept, bags, labels, 0.1).beta, rtol=1e-5, atol=1e-7)


def test_the_penalty_turns_the_score_away_from_what_the_views_change():
    """Dimension 1 carries the label in the training cells (a site effect), and the views move it at random:
    with the penalty, the score stops leaning on it and keeps the real signal (dimension 0)."""
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 2
    bags = {}
    for i, label in enumerate(labels):
        x = rng.normal(size=(20, 4)).astype(np.float32)
        x[:, 0] += 0.8 * label
        x[:, 1] += 1.5 * label
        bags[f"P{i}"] = x
    views = {p: [x + np.float32(2.0) * rng.normal(size=x.shape).astype(np.float32) * np.array([0, 1, 0, 0], np.float32)]
             for p, x in bags.items()}
    plain = statistics_ridge(CellStatistics(bags), bags, labels, 0.1).beta
    robust = statistics_ridge(CellStatistics(bags, views=Views(views, 4.0)), bags, labels, 0.1).beta
    assert abs(robust[1]) < 0.2 * abs(plain[1])
    assert robust[0] > 0.5 * plain[0] > 0


@pytest.fixture(scope="module")
def with_views(synthetic_root, tmp_path_factory):
    from lymphocytosis.extract.extraction import extract

    out = tmp_path_factory.mktemp("views") / "embeddings.h5"
    extract(synthetic_root, out, small_settings(views=True))
    return out


def test_extraction_writes_one_view_of_every_cell_beside_the_embeddings(with_views, synthetic_root, caplog):
    from lymphocytosis.extract.extraction import VIEW_SEED, extract

    provenance, bags = load_bags(with_views)
    view_provenance, views = load_bags(views_path(with_views))
    assert view_provenance[TRAINING_VIEW] == augmentation.recipe(VIEW_SEED)
    assert {k: v for k, v in identity(view_provenance).items() if k != TRAINING_VIEW} == identity(provenance)
    assert identity(view_provenance) != identity(provenance)
    assert list(views) == list(bags)
    for patient_id, bag in bags.items():
        assert views[patient_id].filenames == bag.filenames
        assert views[patient_id].embeddings.shape == bag.embeddings.shape
    assert sum(not np.array_equal(views[p].embeddings, bags[p].embeddings) for p in bags) == len(bags)
    with caplog.at_level(logging.INFO):
        extract(synthetic_root, with_views, small_settings(views=True))
    assert caplog.text.count("already complete") == 2  # both files: nothing embedded again


def test_no_views_option_writes_none(synthetic_root, tmp_path):
    import extract as extract_cli

    out = tmp_path / "e.h5"
    assert extract_cli.main(["--root", str(synthetic_root), "--out", str(out), "--crop", "64", "--batch-size", "8",
                             "--workers", "0", "--device", "cpu", "--no-views", "-q"]) == 0
    assert out.is_file() and not views_path(out).exists()
    assert extract_cli.main(["--root", str(synthetic_root), "--out", str(tmp_path / "m.h5"), "--measure", "colour",
                             "--no-views", "-q"]) == 2


def test_a_fit_learns_from_the_views_and_says_so(with_views, synthetic_embeddings, caplog):
    from lymphocytosis.model.classifier import FittedModel
    from lymphocytosis.model.cohort import load_cohort

    settings = Settings()
    cohort = load_cohort(with_views)
    assert cohort.primary.views is not None
    ids = cohort.labelled_ids
    model = FittedModel.fit(cohort, ids, settings.spec, settings.params)
    assert model.features.invariance == {cohort.primary.name: settings.spec.cell_score_invariance}
    bare = load_cohort(synthetic_embeddings)
    with caplog.at_level(logging.WARNING):
        first = FittedModel.fit(bare, ids, settings.spec, settings.params)
        FittedModel.fit(bare, ids[1:], settings.spec, settings.params)
    assert first.features.invariance == {bare.primary.name: 0.0}
    assert caplog.text.count("no training views beside it") == 1
    assert not np.array_equal(model.features.cell_score[cohort.primary.name].beta,
                              first.features.cell_score[bare.primary.name].beta)
    assert cohort.data_fingerprint != bare.data_fingerprint


def test_views_made_otherwise_or_given_as_embeddings_are_refused(with_views, synthetic_root, synthetic_embeddings,
                                                                 tmp_path):
    from lymphocytosis.extract.extraction import extract
    from lymphocytosis.model.cohort import load_cohort

    with pytest.raises(InputError, match="a file of training views; give the embeddings file"):
        load_cohort(views_path(with_views))
    other = tmp_path / "other" / "embeddings.h5"
    other.parent.mkdir()
    extract(synthetic_root, other, small_settings(views=True, crop=48))
    mixed = tmp_path / "mixed" / "embeddings.h5"
    mixed.parent.mkdir()
    shutil.copyfile(synthetic_embeddings, mixed)
    shutil.copyfile(views_path(other), views_path(mixed))
    with pytest.raises(InputError, match=r"embeddings\.views\.h5: training views not made like .*preprocessing"):
        load_cohort(mixed)


def test_a_model_saved_before_views_loads_with_none():
    spec = Settings().spec
    data = {"backbones": ["b"], "pca": {}, "cell_score": {}}
    assert FittedFeatures.from_dict(spec, data).invariance == {}
    with pytest.raises(InputError, match="features.invariance"):
        FittedFeatures.from_dict(spec, {**data, "invariance": {"b": -1}})


def test_every_benchmark_change_is_deterministic_and_keeps_the_image_size(synthetic_cell_images):
    from lymphocytosis.acquisition import CHANGES, EXTRA, PANEL

    assert set(CHANGES) == set(PANEL) | set(EXTRA) and not set(PANEL) & set(EXTRA)
    image = Image.open(synthetic_cell_images[0]).convert("RGB")
    for name, change in CHANGES.items():
        once, twice = np.asarray(change(image)), np.asarray(change(image.copy()))
        assert once.shape == np.asarray(image).shape, name
        assert np.array_equal(once, twice), name
        assert not np.array_equal(once, np.asarray(image)), name


def test_views_of_images_since_replaced_are_refused(synthetic_root, synthetic_embeddings, tmp_path):
    """Same patients, same file names, other image contents: the views are of the old images."""
    from lymphocytosis.extract.extraction import extract
    from lymphocytosis.model.cohort import load_cohort

    root = tmp_path / "dlmi"
    shutil.copytree(synthetic_root, root)
    first = sorted(root.glob("trainset/*/*.jpg"))[0]
    out = tmp_path / "e.h5"
    extract(root, out, small_settings(views=True))
    Image.open(first).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(first, format="JPEG")
    extract(root, out, small_settings(views=False))  # the embeddings follow the images; the views stay old
    with pytest.raises(InputError, match=rf"patient {first.parent.name}'s views are not of the cells in .*without --no-views"):
        load_cohort(out)
    assert load_cohort(out, views=False).primary.views is None  # predict and evaluate do not read them


def test_a_file_named_like_views_that_is_not_is_refused(synthetic_embeddings, tmp_path):
    from lymphocytosis.model.cohort import load_cohort

    shutil.copyfile(synthetic_embeddings, tmp_path / "e.h5")
    shutil.copyfile(synthetic_embeddings, views_path(tmp_path / "e.h5"))
    with pytest.raises(InputError, match=r"e\.views\.h5: not a file of training views"):
        load_cohort(tmp_path / "e.h5")


def test_a_leftover_views_file_of_other_settings_is_refused_before_embedding(with_views, synthetic_root, tmp_path):
    from lymphocytosis.extract.extraction import extract

    out = tmp_path / "embeddings.h5"
    shutil.copyfile(views_path(with_views), views_path(out))  # made with crop 64: this run asks for 48
    with pytest.raises(InputError, match=r"embeddings\.views\.h5: exists with other settings.*--overwrite"):
        extract(synthetic_root, out, small_settings(views=True, crop=48))
    assert not out.exists()


def test_a_study_with_views_is_another_study(with_views, synthetic_embeddings):
    from lymphocytosis.model import tuning
    from lymphocytosis.model.cohort import load_cohort

    plain, viewed = load_cohort(synthetic_embeddings), load_cohort(with_views)
    assert tuning.training_views(plain) == {} and list(tuning.training_views(viewed).values())[0] == augmentation.recipe(1)
    assert tuning.study_name(plain, 5, 2, 0) != tuning.study_name(viewed, 5, 2, 0)
    saved = tuning.study_record(plain, 5, 2, 0)
    assert any("other training views" in d for d in tuning.record_differences(saved, tuning.study_record(viewed, 5, 2, 0)))
    del saved["training_views"]  # a study recorded before views existed, on a cohort without them: the same
    assert tuning.record_differences(saved, tuning.study_record(plain, 5, 2, 0)) == []
