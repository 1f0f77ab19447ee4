"""tune.py's study and outputs: a study is tied to the patients, embeddings and CV design it was made on (another
run under its name is refused), the storage and --best-params are never an input nor a file tune.py did not
write, a refused run leaves no log, and a database password appears in no log, settings file or error.

Runs on hand-made embeddings (`write_fake_embeddings`) with 3 folds x 1 repeat and one or two trials.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import optuna
import pytest

import tune as tune_cli
from conftest import assert_one_line_error, run_main, write_fake_embeddings
from lymphocytosis.cli import tune as tune_cli_module
from lymphocytosis.model import study_storage, tuning
from lymphocytosis.model.cohort import load_cohort
from lymphocytosis.model.evaluation import repeated_folds

CV_DESIGN = ["--folds", "3", "--repeats", "1", "--seed", "0"]


def tune(embeddings, *args: str):
    embeddings = embeddings if isinstance(embeddings, list) else [embeddings]
    return run_main(tune_cli.main, [a for e in embeddings for a in ("--embeddings", str(e))] + list(args))


def logs_of(embeddings: Path) -> list[Path]:
    folder = embeddings.parent / "logs"
    return sorted(folder.iterdir()) if folder.exists() else []


@pytest.fixture
def embeddings(tmp_path) -> Path:
    return write_fake_embeddings(tmp_path / "a")


def test_a_study_is_tied_to_its_data_and_design(embeddings, tmp_path):
    url = f"sqlite:///{tmp_path}/s.sqlite3"
    named = ["--storage", url, "--study-name", "mine", "--best-params", str(tmp_path / "best.json"), "--trials", "1"]
    result = tune(embeddings, *CV_DESIGN, *named)
    assert result.code == 0, result.stderr
    cohort = load_cohort(embeddings)
    record = optuna.load_study(study_name="mine", storage=url).user_attrs["lymphocytosis"]
    assert record["dataset_fingerprint"] == cohort.fingerprint
    assert record["embeddings_provenance"] == cohort.provenance
    assert record["cv_design"] == {"folds": 3, "repeats": 1, "seed": 0}
    assert record["files"] == {"embeddings": [str(embeddings)], "measurements": []}
    logs = logs_of(embeddings)

    other_design = ["--folds", "3", "--repeats", "1", "--seed", "1"]
    assert_one_line_error(tune(embeddings, *other_design, *named), "--study-name mine", "sqlite:///",
                          "another CV design (folds 3 vs 3, repeats 1 vs 1, seed 0 vs 1)", "choose another --study-name")
    other_patients = write_fake_embeddings(tmp_path / "b", n_train=21)
    assert_one_line_error(tune(other_patients, *CV_DESIGN, *named), "other labelled patients")
    other_weights = write_fake_embeddings(tmp_path / "c", provenance={"weights_sha256": "1" * 64})
    assert_one_line_error(tune(other_weights, *CV_DESIGN, *named), "fake-backbone of another provenance", "weights_sha256")
    second = write_fake_embeddings(tmp_path / "d", provenance={"model": "second-backbone"})  # the same cells
    assert_one_line_error(tune([embeddings, second], *CV_DESIGN, *named),
                          "other embeddings or measurement files (fake-backbone vs fake-backbone, second-backbone)")
    assert logs_of(embeddings) == logs and not logs_of(other_patients) and not logs_of(second)  # refused: no log

    result = tune(embeddings, *CV_DESIGN, *named, "--trials", "2")  # the same data and design: resumed
    assert result.code == 0, result.stderr
    assert len(optuna.load_study(study_name="mine", storage=url).trials) == 2


def test_a_study_without_a_record(embeddings, tmp_path):
    """A study an earlier version made (trials, no record) is resumed under the default name, which is derived
    from the data and design, and refused under any other."""
    url = f"sqlite:///{tmp_path}/s.sqlite3"
    cohort = load_cohort(embeddings)
    default = tuning.study_name(cohort, 3, 1, 0)
    folds = repeated_folds(cohort.labelled_ids, cohort.labels(cohort.labelled_ids), 3, 1, 0)
    for name in ("old", default):
        tuning.run_study(tuning.create_study(name, study_storage.open_storage(url), 0), cohort, folds, 1)
    best = ["--best-params", str(tmp_path / "best.json"), "--storage", url, "--trials", "2"]
    assert_one_line_error(tune(embeddings, *CV_DESIGN, *best, "--study-name", "old"), "--study-name old",
                          "no record of the data and CV design")
    result = tune(embeddings, *CV_DESIGN, *best)
    assert result.code == 0, result.stderr
    study = optuna.load_study(study_name=default, storage=url)
    assert len(study.trials) == 2 and study.user_attrs["lymphocytosis"]["dataset_fingerprint"] == cohort.fingerprint


@pytest.mark.parametrize("storage, target", [
    ("sqlite:///{embeddings}", "embeddings"),
    ("journal://{csv}", "csv"),
])
def test_storage_is_never_an_input(embeddings, tmp_path, storage, target):
    paths = {"embeddings": embeddings, "csv": embeddings.parent / "dlmi" / "trainset" / "trainset_true.csv"}
    before = paths[target].read_bytes()
    result = tune(embeddings, *CV_DESIGN, "--trials", "1", "--storage", storage.format(**paths),
                  "--best-params", str(tmp_path / "best.json"))
    assert_one_line_error(result, f"--storage {paths[target]}: is an input of this run")
    assert paths[target].read_bytes() == before and not logs_of(embeddings)


def test_best_params_replaces_only_its_own_file(embeddings, tmp_path):
    url = f"sqlite:///{tmp_path}/s.sqlite3"
    run = [*CV_DESIGN, "--trials", "1", "--storage", url, "--best-params"]
    target = tmp_path / "best.json"
    for content in ('{"feature_spec": {}, "params": {}}', "notes I keep here\n", "[1, 2]"):
        target.write_text(content)
        result = tune(embeddings, *run, str(target))
        assert_one_line_error(result, f"--best-params {target}: exists and is not a best-settings file written by tune.py")
        assert target.read_text() == content
    folder = tmp_path / "folder"
    folder.mkdir()
    assert_one_line_error(tune(embeddings, *run, str(folder)), f"--best-params {folder}")
    assert_one_line_error(tune(embeddings, *run, f"{tmp_path}/s.sqlite3"), "is the study's storage")
    assert not logs_of(embeddings)

    earlier = {"feature_spec": {}, "params": {}, "embeddings_provenance": {}, "dataset_fingerprint": "x", "study": "s",
               "trial": 0}  # what tune.py wrote before the file had a `format`
    target.write_text(json.dumps(earlier))
    result = tune(embeddings, *run, str(target))
    assert result.code == 0, result.stderr
    saved = json.loads(target.read_text())
    assert saved["format"] == "lymphocytosis-best-params/1" and saved["dataset_fingerprint"] != "x"
    assert tune(embeddings, *run, str(target), "--trials", "2").code == 0  # its own file: replaced again


def test_nested_options_need_nested(embeddings, tmp_path):
    for extra in (["--json", str(tmp_path / "n.json")], ["--outer-folds", "3"], ["--outer-repeats", "2"]):
        assert_one_line_error(tune(embeddings, *CV_DESIGN, *extra), extra[0], "options of --nested")
    assert not logs_of(embeddings)


PASSWORD_URL = "postgresql://user:secret@host/db"


def test_the_password_is_never_shown(embeddings, tmp_path, monkeypatch):
    """Not in the log file (even where a library or the command line would write the URL), the settings file,
    best_params.json, the output, or an error."""
    from postgres import free_port

    unreachable = f"postgresql://user:secret@127.0.0.1:{free_port()}/db"
    result = tune(embeddings, *CV_DESIGN, "--trials", "1", "--storage", unreachable, "--best-params", str(tmp_path / "b.json"))
    assert_one_line_error(result, "--storage postgresql://user:***@127.0.0.1", "cannot open")
    assert "secret" not in result.stderr + result.stdout and not logs_of(embeddings)

    opened = []

    def in_memory(url, heartbeat_s=None):
        opened.append(url)
        logging.getLogger("sqlalchemy.engine").warning("connecting to %s", url)  # a library naming the URL
        return optuna.storages.InMemoryStorage()

    monkeypatch.setattr(study_storage, "open_storage", in_memory)
    monkeypatch.setattr(sys, "argv", ["tune.py", "--storage", PASSWORD_URL])  # the run's log records its command line
    best = tmp_path / "best.json"
    result = tune(embeddings, *CV_DESIGN, "--trials", "1", "--storage", PASSWORD_URL, "--best-params", str(best))
    assert result.code == 0 and opened == [PASSWORD_URL], result.stderr
    texts = {path.suffix: path.read_text(encoding="utf-8") for path in logs_of(embeddings)}
    assert set(texts) == {".log", ".toml"}
    assert "command line: tune.py --storage postgresql://user:***@host/db" in texts[".log"]
    assert "connecting to postgresql://user:***@host/db" in texts[".log"]
    assert 'storage = "postgresql://user:***@host/db"' in texts[".toml"]
    assert json.loads(best.read_text())["storage"] == "postgresql://user:***@host/db"
    for text in (*texts.values(), best.read_text(), result.stdout, result.stderr):
        assert "secret" not in text
    settings = next(path for path in logs_of(embeddings) if path.suffix == ".toml")
    again = tune_cli_module.parse_args(["--config", str(settings)])  # the settings file reads back (password masked)
    assert (again.storage, again.trials, again.embeddings) == ("postgresql://user:***@host/db", 1, [embeddings])


def test_best_params_nested_too_deep_is_not_ours(tmp_path):
    """A JSON nested beyond Python's recursion limit is simply not a file tune.py wrote (refused, no traceback)."""
    from lymphocytosis.model.tuned_params import is_best_params_file

    path = tmp_path / "best.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert not is_best_params_file(path)
