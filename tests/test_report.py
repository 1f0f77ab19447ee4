"""`model.py report` on the tiny synthetic dataset: the folder is complete, self-contained and readable.

One report is built per module (3 folds x 2 repeats) on a copy of the dataset where one patient's images were
deleted after extraction, and checked from several sides: the page's sections, that every relative link in it
resolves inside the folder, that the figures and thumbnails are real images, the Markdown summary, and that the
missing images became a note. The CLI is run once more (1 repeat, no patients) and patient selection is checked
without any CV: cross-validation is the slow part, so it runs twice in all.
"""

from __future__ import annotations

import argparse
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from PIL import Image

import model as model_cli
from conftest import SYNTHETIC_N_TRAIN, assert_one_line_error, run_main
from lymphocytosis.cohort import load_cohort
from lymphocytosis.errors import InputError
from lymphocytosis.report import (build_report, feature_family, prepare_out_dir, readable_name, select_patients,
                                  statistic_name)
from lymphocytosis.settings import default_settings

SECTIONS = ("performance", "feature-importance", "patients", "provenance")


def report_args(out_dir: Path, patients: str = "all") -> argparse.Namespace:
    return argparse.Namespace(out_dir=out_dir, patients=patients, folds=3, repeats=2, seed=0, embeddings=None, root=None)


class References(HTMLParser):
    """Every src/href in a page, and the element ids."""

    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.links.append(value)
            if name == "id" and value:
                self.ids.add(value)


def parse(page: str) -> References:
    parser = References()
    parser.feed(page)
    return parser


@pytest.fixture(scope="module")
def cohort(synthetic_embeddings):
    return load_cohort(synthetic_embeddings)


@pytest.fixture(scope="module")
def missing_patient(cohort) -> str:
    """The labelled patient whose images are deleted from the report's copy of the dataset."""
    return cohort.labelled_ids[0]


@pytest.fixture(scope="module")
def report(cohort, synthetic_root, missing_patient, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("report")
    root = base / "dlmi"
    shutil.copytree(synthetic_root, root)
    for filename in cohort.filenames[missing_patient]:
        (root / "trainset" / missing_patient / filename).unlink()
    moved = load_cohort(cohort.embeddings_path, root)
    spec, params = default_settings()
    out = base / "report"
    assert build_report(moved, spec, params, "defaults", report_args(out)) == out
    return out


def test_index_has_every_section_and_resolving_relative_links(report, cohort):
    page = (report / "index.html").read_text(encoding="utf-8")
    references = parse(page)
    for section in SECTIONS:
        assert section in references.ids, f"section {section} missing"
    local = []
    for link in references.links:
        parsed = urlparse(link)
        assert parsed.scheme in ("", "file"), f"network reference in a self-contained page: {link}"
        assert not link.startswith("/"), f"absolute path: {link}"
        if parsed.path:
            target = (report / unquote(parsed.path)).resolve()
            assert target.is_file(), f"{link} does not exist"
            assert report.resolve() in target.parents, f"{link} points outside the report"
            local.append(target)
        if parsed.fragment:
            assert parsed.fragment in references.ids, f"anchor {link} has no target"
    assert any(p.suffix == ".png" for p in local) and any(p.suffix == ".jpg" for p in local)
    # every labelled patient has its card; provenance names the embeddings and the weights
    for pid in cohort.labelled_ids:
        assert f"patient-{pid}" in references.ids
    assert cohort.provenance["weights_sha256"] in page
    assert str(cohort.embeddings_path.resolve()) in page
    assert "Traceback" not in page and "nan ±" not in page


def test_figures_and_thumbnails_are_valid_small_images(report):
    figures = sorted((report / "figures").glob("*.png"))
    names = {p.stem for p in figures}
    assert {"roc", "confusion", "calibration", "gain", "shap_families", "shap_top", "metrics"} <= names
    for path in figures:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100
    thumbnails = sorted((report / "cells").rglob("*.jpg"))
    assert thumbnails
    for path in thumbnails:
        with Image.open(path) as image:
            assert image.format == "JPEG" and max(image.size) <= 128


def test_summary_markdown_has_metrics_features_and_provenance(report, cohort):
    text = (report / "summary.md").read_text(encoding="utf-8")
    for heading in ("## Performance", "## Feature importance", "## Provenance"):
        assert heading in text
    assert re.search(r"\| images \+ clinical \| \d\.\d{3} ± \d\.\d{3} \| \d\.\d{3} ± \d\.\d{3} \|", text)
    assert "clinical only" in text and cohort.provenance["model"] in text
    for target in re.findall(r"\]\(([^)]+)\)", text):
        assert (report / target).is_file(), target
    csv = (report / "patients.csv").read_text().splitlines()
    assert csv[0].startswith("ID,label,probability") and len(csv) == SYNTHETIC_N_TRAIN + 1


def test_readable_names_and_families():
    assert readable_name("clinical:lymph_count") == "lymphocyte count"
    assert readable_name("cell_score:q90") == "cell score, 90th percentile"
    assert readable_name("cell_score:top10") == "cell score, mean of top 10%"
    assert readable_name("embedding:mean[dim12]") == "embedding dim 12, mean"
    assert readable_name("embedding:max[pc3]") == "embedding PC 3, maximum"
    assert statistic_name("q50") == "median" and statistic_name("q1") == "1st percentile"
    assert feature_family("embedding:mean[dim12]") == "embedding:mean"
    assert feature_family("clinical:age") == "clinical:age"
    assert feature_family("cell_score:q90") == "cell_score:q90"


def test_missing_images_become_a_note(report, missing_patient):
    page = (report / "index.html").read_text(encoding="utf-8")
    start = page.index(f'id="patient-{missing_patient}"')
    end = page.find('<div class="patient', start)
    card = page[start:end if end > 0 else None]
    assert "image file missing" in card
    assert not (report / "cells" / missing_patient).exists()
    assert "could not be read" in page


def test_patient_selection(cohort):
    labelled, unlabelled = cohort.labelled_ids, cohort.unlabelled_ids
    assert select_patients(cohort, "all") == labelled
    assert select_patients(cohort, "none") == []
    assert select_patients(cohort, f" {labelled[2]},{labelled[0]},{labelled[2]} ") == [labelled[2], labelled[0]]
    with pytest.raises(InputError, match="unknown patient NOPE"):
        select_patients(cohort, f"{labelled[0]},NOPE")
    with pytest.raises(InputError, match=f"{unlabelled[0]} has no label"):
        select_patients(cohort, unlabelled[0])


def test_out_dir_holding_other_files_is_refused_and_an_old_report_is_cleaned(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="notes.txt"):
        prepare_out_dir(argparse.Namespace(out_dir=other))
    assert (other / "notes.txt").read_text() == "mine"
    old = tmp_path / "old"
    (old / "cells" / "P1").mkdir(parents=True)
    (old / "cells" / "P1" / "top1.jpg").write_bytes(b"x")
    (old / "index.html").write_text("old")
    assert prepare_out_dir(argparse.Namespace(out_dir=old)) == old
    assert not (old / "cells").exists()


def test_cli_report_and_patient_errors(synthetic_embeddings, cohort, tmp_path):
    unlabelled = cohort.unlabelled_ids[0]
    result = run_main(model_cli.main, ["report", "--embeddings", str(synthetic_embeddings), "--params", "default",
                                       "--folds", "3", "--repeats", "2", "--patients", unlabelled,
                                       "--out-dir", str(tmp_path / "bad")])
    assert_one_line_error(result, unlabelled, "no label")
    result = run_main(model_cli.main, ["report", "--embeddings", str(synthetic_embeddings), "--params", "default",
                                       "--folds", "3", "--repeats", "1", "--patients", "none",
                                       "--out-dir", str(tmp_path / "none")])
    assert result.code == 0, result.stderr
    assert f"report: {tmp_path / 'none'}" in result.stdout
    page = (tmp_path / "none" / "index.html").read_text(encoding="utf-8")
    assert "--patients none" in page and not (tmp_path / "none" / "cells").exists()
