"""Messages that fit how the tool was started and what the user has: the command they can type (`lymphocytosis
fit` or `python model.py fit`), a folder given to --embeddings, the folder a default was looked for in and the
extractions found there, `tune --trials` as the study's total, other libraries' INFO lines off the terminal,
the study's metric named, a resumed progress bar's rate, log lines above a bar.
"""

from __future__ import annotations

import io
import logging
import re

import optuna

import model as model_cli
import tune as tune_cli
from conftest import assert_one_line_error, run_main, write_fake_embeddings
from lymphocytosis.cli.common import Run
from lymphocytosis.cli.main import main as console_main
from lymphocytosis.invocation import as_started, command
from lymphocytosis.progress import Progress

DESIGN = ["--folds", "3", "--repeats", "1"]


def test_errors_name_the_command_as_it_was_started(tmp_path):
    missing = tmp_path / "none.h5"
    assert_one_line_error(run_main(model_cli.main, ["cv", "--embeddings", str(missing)]), "`python extract.py` first")
    line = assert_one_line_error(run_main(console_main, ["cv", "--embeddings", str(missing)]),
                                 "`lymphocytosis extract` first")
    assert "extract.py" not in line
    assert_one_line_error(run_main(model_cli.main, ["cv", "--embeddings", str(missing)]), "`python extract.py` first")


def test_log_lines_name_the_command_as_started_and_nothing_is_left_behind():
    """The console's log lines are rewritten for the run only: a script run afterwards reads the canonical form."""
    from lymphocytosis.cli.common import AsStarted, cli_main, setup_logging, terminal_handlers

    stream = io.StringIO()

    @cli_main
    def speaks(argv, run):
        logging.getLogger("lymphocytosis.test").warning("rerun `%s` first", command("fit"))
        return 0

    setup_logging()
    (handler,) = terminal_handlers()
    saved, handler.stream = handler.stream, stream
    try:
        assert speaks([], console=True) == 0
        assert speaks([]) == 0
    finally:
        handler.stream = saved
    installed, script = stream.getvalue().splitlines()
    assert "rerun `lymphocytosis fit` first" in installed and "model.py" not in installed
    assert "rerun `python model.py fit` first" in script
    assert not any(isinstance(f, AsStarted) for f in handler.filters)  # removed after the run


def test_library_messages_have_one_canonical_form():
    assert command("fit") == "python model.py fit" and command("extract") == "python extract.py"
    text = f"run `{command('extract')}` then `{command('cv')}` and `{command('tune')} --nested`"
    assert as_started(text, console=False) == text
    assert as_started(text, console=True) == ("run `lymphocytosis extract` then `lymphocytosis cv` and "
                                              "`lymphocytosis tune --nested`")
    assert Run(console=True).words("model.py report") == "lymphocytosis report"


def test_help_examples_are_written_as_started(capsys):
    run_main(console_main, ["cv", "--help"])
    installed = run_main(console_main, ["fit", "--help"]).stdout
    assert "lymphocytosis fit" in installed and "model.py fit" not in installed
    assert "model.py fit" in run_main(model_cli.main, ["fit", "--help"]).stdout


def test_a_folder_given_to_embeddings_uses_its_embeddings_file(tmp_path):
    embeddings = write_fake_embeddings(tmp_path / "artifacts" / "dlmi")
    result = run_main(model_cli.main, ["cv", "--embeddings", str(embeddings.parent), "--params", "default", *DESIGN, "-q"])
    assert result.code == 0, result.stderr
    assert (embeddings.parent / "cv").is_dir()


def test_defaults_say_where_they_looked_and_what_they_found(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATA", raising=False)
    line = assert_one_line_error(run_main(model_cli.main, ["cv"]), f"no extraction in {tmp_path / 'artifacts'}")
    assert "synthetic" not in line and "python extract.py --root DATASET" in line
    for name in ("a", "b"):
        write_fake_embeddings(tmp_path / "artifacts" / name)
    line = assert_one_line_error(run_main(console_main, ["cv"]), "several extractions", "--embeddings")
    assert f"artifacts/a/embeddings.h5 (of {tmp_path / 'artifacts' / 'a' / 'dlmi'})" in line and "DATA" not in line


def test_tune_says_trials_is_the_total_and_names_its_metric(tmp_path, caplog):
    embeddings = write_fake_embeddings(tmp_path / "artifacts" / "dlmi")
    url = f"sqlite:///{tmp_path}/t.sqlite3"
    args = ["--embeddings", str(embeddings), *DESIGN, "--storage", url]
    assert run_main(tune_cli.main, [*args, "--trials", "2"]).code == 0
    result = run_main(tune_cli.main, [*args, "--trials", "2"])
    assert result.code == 0, result.stderr
    assert "already has 2 finished trials, so --trials 2 runs none" in result.stdout
    assert "ask for --trials 4 to run 2 more" in result.stdout
    (name,) = optuna.get_all_study_names(url)
    assert optuna.load_study(study_name=name, storage=url).metric_names == ["balanced accuracy (optimistic)"]
    assert "INFO optuna" not in result.stderr  # Optuna's own INFO lines stay off the terminal


def test_other_libraries_info_stays_off_the_terminal_unless_verbose():
    from lymphocytosis.cli.common import setup_logging

    stream = io.StringIO()
    setup_logging(logging.INFO)
    (handler,) = [h for h in logging.getLogger().handlers if getattr(h, "_lymphocytosis", False)]
    saved, handler.stream = handler.stream, stream
    try:
        logging.getLogger("otherlib").info("A new study created")
        logging.getLogger("optuna.storages").warning("a warning")
        logging.getLogger("lymphocytosis.model").info("ours")
        setup_logging(logging.DEBUG)
        logging.getLogger("otherlib").info("verbose: shown")
    finally:
        handler.stream = saved
        setup_logging(logging.INFO)
    text = stream.getvalue()
    assert "A new study created" not in text and "a warning" in text and "ours" in text and "verbose: shown" in text


def test_a_resumed_bar_counts_only_this_runs_rate_and_log_lines_go_above(monkeypatch):
    monkeypatch.setenv("LYMPHOCYTOSIS_PROGRESS", "always")
    with Progress(quiet=False).bar(total=10_000, initial=9_990, unit="img") as bar:
        assert bar.format_dict["initial"] == 9_990  # tqdm's rate: (n - initial) / elapsed
        (handler,) = [h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler
                      and getattr(h, "_lymphocytosis", False)] or [None]
        if handler is not None:
            assert type(handler.stream).__name__ == "_AboveTheBar"
    rate = re.search(r"([\d.]+)img/s", bar.format_meter(n=10_000, total=10_000, elapsed=2.0, initial=9_990, unit="img"))
    assert rate and float(rate.group(1)) == 5.0
