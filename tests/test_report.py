"""`model.py report` on the tiny synthetic dataset: the folder is complete, self-contained and readable.

One report is built per module (3 folds x 2 repeats) on a copy of the dataset where one patient's images were
deleted after extraction, and checked from several sides: the page's sections, that every relative link in it
resolves inside the folder, that the figures and thumbnails are real images, the Markdown summary, and that the
missing images became a note. The CLI is run once more (1 repeat, no patients) and patient selection is checked
without any CV: cross-validation is the slow part, so it runs twice in all.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from PIL import Image

import model as model_cli
from conftest import SYNTHETIC_N_TRAIN, assert_one_line_error, run_main
from lymphocytosis.errors import InputError
from lymphocytosis.model.cohort import load_cohort
from lymphocytosis.model.evaluation import CVDesign, compare
from lymphocytosis.model.explanations import explain
from lymphocytosis.model.results import load_cv, save_cv
from lymphocytosis.model.tables import CELL_SCORE, CLINICAL, EMBEDDING, FeatureColumn
from lymphocytosis.model.tuned_params import Settings
from lymphocytosis.report.build import build_report, prepare_out_dir, select_patients
from lymphocytosis.report.naming import feature_family, readable_name, statistic_name

SECTIONS = ("performance", "feature-importance", "patients", "provenance")


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
    for filename in cohort.primary.filenames[missing_patient]:
        (root / "trainset" / missing_patient / filename).unlink()
    moved = load_cohort(cohort.primary.path, root)
    settings = Settings()
    comparison = compare(moved, settings.spec, settings.params, CVDesign(3, 2, 0), keep_models=True)
    saved = load_cv(save_cv(base / "cv", comparison, explain(comparison.full), settings, moved, 1.0))
    out = base / "report"
    assert build_report(saved, moved, prepare_out_dir(out), moved.labelled_ids) == out
    return out


def local_targets(report: Path, page: Path) -> list[Path]:
    """Every file a page links to, checked: relative, inside the report, existing; every anchor has its target."""
    references = parse(page.read_text(encoding="utf-8"))
    targets = []
    for link in references.links:
        parsed = urlparse(link)
        assert parsed.scheme in ("", "file"), f"{page.name}: network reference in a self-contained page: {link}"
        assert not link.startswith("/"), f"{page.name}: absolute path: {link}"
        if parsed.path:
            target = (page.parent / unquote(parsed.path)).resolve()
            assert target.is_file(), f"{page.name}: {link} does not exist"
            assert report.resolve() in target.parents, f"{page.name}: {link} points outside the report"
            targets.append(target)
        if parsed.fragment and not parsed.path:
            assert parsed.fragment in references.ids, f"{page.name}: anchor {link} has no target"
    return targets


def test_index_has_every_section_and_resolving_relative_links(report, cohort):
    page = (report / "index.html").read_text(encoding="utf-8")
    references = parse(page)
    for section in SECTIONS:
        assert section in references.ids, f"section {section} missing"
    local = local_targets(report, report / "index.html")
    assert any(p.suffix == ".png" for p in local)
    # every labelled patient has a page, linked from the index; provenance names the embeddings and the weights
    pages = {p.stem for p in local if p.parent.name == "patients"}
    assert pages == set(cohort.labelled_ids)
    assert cohort.primary.provenance["weights_sha256"] in page
    assert str(cohort.primary.path.resolve()) in page
    assert "Traceback" not in page and "nan ±" not in page


def test_patient_pages_link_back_and_show_their_cells(report, cohort, missing_patient):
    shown = [p for p in cohort.labelled_ids if p != missing_patient][0]
    targets = local_targets(report, report / "patients" / f"{shown}.html")
    assert report / "index.html" in targets and any(t.suffix == ".jpg" for t in targets)
    page = (report / "patients" / f"{shown}.html").read_text(encoding="utf-8")
    for words in ("Why this call", "pushes", "log-odds", "×10⁹/L", "years", "about 0 for a cell typical of reactive"):
        assert words in page, words
    assert "sex (male)" not in page


def test_synthetic_data_is_flagged(report):
    for page in (report / "index.html", next((report / "patients").glob("*.html"))):
        assert "SYNTHETIC DATA" in page.read_text(encoding="utf-8"), page.name
    assert "SYNTHETIC DATA" in (report / "summary.md").read_text(encoding="utf-8")


def test_figures_and_thumbnails_are_valid_small_images(report):
    figures = sorted((report / "figures").glob("*.png"))
    names = {p.stem for p in figures}
    assert {"roc", "confusion", "calibration", "gain", "shap_top", "metrics"} <= names
    assert "shap_families" not in names  # each family is one feature here: that chart would repeat shap_top
    for path in figures:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100
    thumbnails = sorted(p for p in (report / "cells").rglob("*.jpg") if not p.stem.endswith("-full"))
    assert thumbnails
    for path in thumbnails:  # large enough to see a cell, and each opens the whole image
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.size == (160, 160)
        with Image.open(path.with_name(f"{path.stem}-full.jpg")) as image:
            assert min(image.size) >= 160
    page = next(p for p in (report / "patients").glob("*.html") if "-full.jpg" in p.read_text(encoding="utf-8"))
    assert re.search(r'<a href="../cells/[^"]+-full.jpg"><img src="../cells/[^"]+.jpg"', page.read_text(encoding="utf-8"))


def test_summary_markdown_has_metrics_features_and_provenance(report, cohort):
    text = (report / "summary.md").read_text(encoding="utf-8")
    for heading in ("## Performance", "## Feature importance", "## Provenance"):
        assert heading in text
    assert re.search(r"\*\*balanced accuracy \(images \+ clinical\)\*\*: \d\.\d{3} ± \d\.\d{3} \(95% CI "
                     r"\d\.\d{3}–\d\.\d{3}; clinical only: \d\.\d{3} ± \d\.\d{3}", text)
    assert cohort.primary.provenance["model"] in text
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        assert (report / target).is_file(), target
    csv = (report / "patients.csv").read_text().splitlines()
    assert csv[0].startswith("ID,LABEL,PROBABILITY") and len(csv) == SYNTHETIC_N_TRAIN + 1


def test_summary_markdown_is_commonmark_and_agrees_with_itself(report):
    """Every table renders as a table (a `|` inside a cell is escaped), no emphasis shows its asterisks, and "In
    short" counts the patients the confusion matrix counts."""
    from markdown_it import MarkdownIt

    text = (report / "summary.md").read_text(encoding="utf-8")
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    separators = [line for line in text.splitlines() if re.fullmatch(r"\|(---\|)+", line)]
    # a header whose cells do not match its delimiter row (an unescaped "|SHAP|") is no table in CommonMark
    assert sum(t.type == "table_open" for t in tokens) == len(separators) >= 4
    shown = [c.content for t in tokens if t.type == "inline" for c in t.children or [] if c.type == "text"]
    assert not [s for s in shown if "**" in s], [s for s in shown if "**" in s]
    matrix = re.search(r"\| reactive \| (\d+) \| (\d+) \|\n\| tumoral \| (\d+) \| (\d+) \|", text)
    short = text.split("## In short", 1)[1].split("## Performance", 1)[0]
    said = re.search(r"recognises (\d+) of (\d+) tumoral \(\d+%\) and (\d+) of (\d+) reactive", short)
    assert matrix and said, short
    rr, rt, tr, tt = map(int, matrix.groups())
    assert [int(g) for g in said.groups()] == [tt, tr + tt, rr, rr + rt]


def test_probabilities_show_the_digits_that_decide_their_side():
    from lymphocytosis.metrics import format_probability

    assert format_probability(0.4996) == "0.4996" and format_probability(0.5004) == "0.5004"
    assert format_probability(0.5) == "0.50" and format_probability(0.31) == "0.31"
    assert format_probability(0.49) == "0.49" and format_probability(0.498) == "0.498"


def test_readable_names_and_families():
    lite0 = "tf_efficientnet_lite0"
    assert readable_name(FeatureColumn(CLINICAL, attribute="lymph_count")) == "lymphocyte count"
    assert readable_name(FeatureColumn(CELL_SCORE, backbone=lite0, statistic="q90")) == "cell score, 90th percentile"
    assert readable_name(FeatureColumn(CELL_SCORE, backbone=lite0, statistic="top10")) == "cell score, mean of top 10%"
    assert readable_name(FeatureColumn(CELL_SCORE, backbone=lite0, statistic="q90"), several_backbones=True) == \
        f"cell score, 90th percentile [{lite0}]"
    assert readable_name(FeatureColumn(EMBEDDING, backbone=lite0, statistic="mean", basis="dim", index=12)) == \
        "embedding dim 12, mean"
    assert readable_name(FeatureColumn(EMBEDDING, backbone=lite0, statistic="max", basis="pc", index=3)) == \
        "embedding PC 3, maximum"
    assert statistic_name("q50") == "median" and statistic_name("q1") == "1st percentile"
    dims = [FeatureColumn(EMBEDDING, backbone=lite0, statistic="mean", basis="dim", index=d) for d in (0, 12)]
    assert feature_family(dims[0]) == feature_family(dims[1])  # embedding statistics pool over dimensions
    other = FeatureColumn(EMBEDDING, backbone="dinobloom-s", statistic="mean", basis="dim", index=0)
    assert feature_family(other) != feature_family(dims[0])  # ... within one backbone
    age, q90 = FeatureColumn(CLINICAL, attribute="age"), FeatureColumn(CELL_SCORE, backbone=lite0, statistic="q90")
    assert len({feature_family(age), feature_family(q90), feature_family(dims[0])}) == 3


class VisibleText(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self.skip = False

    def handle_starttag(self, tag, attrs):
        self.skip = tag in ("style", "script")

    def handle_endtag(self, tag):
        self.skip = False

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


NUMBER = re.compile(r"[-+]?\d+\.\d+%?")


def test_html_and_markdown_state_the_same_numbers(report):
    """Both files render one document: every decimal number of the page is in the Markdown, as often."""
    parser = VisibleText()
    parser.feed((report / "index.html").read_text(encoding="utf-8"))
    html_numbers = Counter(NUMBER.findall(" ".join(parser.parts)))
    markdown_numbers = Counter(NUMBER.findall((report / "summary.md").read_text(encoding="utf-8")))
    assert sum(html_numbers.values()) > 50  # metrics, probabilities, SHAP values, cell scores: not an empty check
    assert html_numbers == markdown_numbers


def test_missing_images_become_a_note(report, missing_patient):
    page = (report / "patients" / f"{missing_patient}.html").read_text(encoding="utf-8")
    assert "image file missing" in page
    assert not (report / "cells" / missing_patient).exists()
    assert "could not be read" in (report / "index.html").read_text(encoding="utf-8")


def test_patient_selection(cohort):
    labelled, unlabelled = cohort.labelled_ids, cohort.unlabelled_ids
    assert select_patients(cohort, "all") == labelled
    assert select_patients(cohort, "none") == []
    assert select_patients(cohort, f" {labelled[2]},{labelled[0]},{labelled[2]} ") == [labelled[2], labelled[0]]
    with pytest.raises(InputError, match="unknown patient NOPE"):
        select_patients(cohort, f"{labelled[0]},NOPE")
    with pytest.raises(InputError, match=f"{unlabelled[0]} has no label"):
        select_patients(cohort, unlabelled[0])


def test_out_dir_holding_other_files_is_refused_and_an_old_report_is_replaced_whole(tmp_path, report, cohort):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="notes.txt"):
        prepare_out_dir(other)
    assert (other / "notes.txt").read_text() == "mine"
    old = tmp_path / "old"
    shutil.copytree(report, old)
    (old / "cells" / "STALE").mkdir(parents=True)
    (old / "cells" / "STALE" / "top1.jpg").write_bytes(b"x")
    assert prepare_out_dir(old) == old
    saved = load_cv(report.parent / "cv")
    moved = load_cohort(cohort.primary.path, report.parent / "dlmi")
    build_report(saved, moved, old, moved.labelled_ids[:1])
    assert not (old / "cells" / "STALE").exists() and (old / "index.html").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_cli_report_and_patient_errors(synthetic_embeddings, cohort, tmp_path):
    unlabelled = cohort.unlabelled_ids[0]
    result = run_main(model_cli.main, ["report", "--embeddings", str(synthetic_embeddings), "--params", "default",
                                       "--folds", "3", "--repeats", "2", "--patients", unlabelled,
                                       "--out-dir", str(tmp_path / "bad")])
    assert_one_line_error(result, unlabelled, "no label")
    result = run_main(model_cli.main, ["report", "--embeddings", str(synthetic_embeddings), "--params", "default",
                                       "--folds", "3", "--repeats", "1", "--patients", "none",
                                       "--out-dir", str(tmp_path / "none"), "--cv-dir", str(tmp_path / "cv")])
    assert result.code == 0, result.stderr
    assert f"report: {tmp_path / 'none'}" in result.stdout
    page = (tmp_path / "none" / "index.html").read_text(encoding="utf-8")
    assert "--patients none" in page and not (tmp_path / "none" / "cells").exists()
    # a second report with the same settings reads the saved cross-validation instead of running it again
    (folder,) = [p for p in (tmp_path / "cv").iterdir() if p.is_dir()]  # one folder per settings and design
    saved = (folder / "cv.json").stat().st_mtime_ns
    result = run_main(model_cli.main, ["report", "--embeddings", str(synthetic_embeddings), "--params", "default",
                                       "--folds", "3", "--repeats", "1", "--patients", "none",
                                       "--out-dir", str(tmp_path / "again"), "--cv-dir", str(tmp_path / "cv")])
    assert result.code == 0, result.stderr
    assert (folder / "cv.json").stat().st_mtime_ns == saved and (tmp_path / "again" / "index.html").is_file()


def test_out_dir_of_report_like_names_but_not_a_report_is_refused(tmp_path):
    """Files that merely have a report's names (summary.md, figures/) are not replaced: only a folder this tool
    marked as its report is."""
    folder = tmp_path / "mine"
    (folder / "figures").mkdir(parents=True)
    (folder / "figures" / "fig1.pdf").write_bytes(b"%PDF")
    (folder / "summary.md").write_text("my notes")
    (folder / ".git").mkdir()
    with pytest.raises(InputError, match="not an earlier report of this tool"):
        prepare_out_dir(folder)
    assert (folder / "summary.md").read_text() == "my notes"


def test_saved_results_of_other_cells_or_rows_are_not_reused(report, cohort):
    """Re-extracted images or a corrected CSV row change the data fingerprint: the report runs the CV again."""
    saved = load_cv(report.parent / "cv")
    moved = load_cohort(cohort.primary.path, report.parent / "dlmi")
    settings = Settings()
    assert saved.matches(moved, settings, CVDesign(3, 2, 0))
    patient = moved.labelled_ids[1]
    moved.primary.records[patient] = [moved.primary.records[patient][0], "f" * 64]  # as if its CSV row changed
    assert not saved.matches(moved, settings, CVDesign(3, 2, 0))


def test_summary_says_a_loss_is_a_loss_and_claims_nothing_without_image_features():
    from types import SimpleNamespace

    from lymphocytosis.metrics import Interval, Spread
    from lymphocytosis.model.feature_spec import FeatureSpec
    from lymphocytosis.report.summary import images_in_words

    def saved(spec):
        clinical = SimpleNamespace(summary=SimpleNamespace(balanced_accuracy=Spread(0.82, 0.02)))
        return SimpleNamespace(comparison=SimpleNamespace(clinical=clinical), settings=SimpleNamespace(spec=spec))

    intervals = {"clinical": {"balanced_accuracy": Interval(0.78, 0.86)}}
    assert "add +0.050" in images_in_words(saved(FeatureSpec()), 0.05, intervals)
    assert "make it worse (-0.040" in images_in_words(saved(FeatureSpec()), -0.04, intervals)
    assert "nothing measurable" in images_in_words(saved(FeatureSpec()), 0.001, intervals)
    without = images_in_words(saved(FeatureSpec().clinical_only()), 0.0, intervals)
    assert "uses no image feature" in without and "add" not in without


def test_results_of_an_older_version_are_recomputed_not_read_nor_refused(tmp_path):
    import json

    from lymphocytosis.model.results import check_results_dir, current_results

    folder = tmp_path / "cv"
    folder.mkdir()
    (folder / "cv.json").write_text(json.dumps({"format": "lymphocytosis-cv/1"}))
    check_results_dir(folder)  # replaceable
    assert not current_results(folder)
    (folder / "cv.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(InputError, match="holds other files"):
        check_results_dir(folder)
