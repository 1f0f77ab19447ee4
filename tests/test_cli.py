"""What a user of the commands sees: the installed `lymphocytosis` command, --help with every default, --version,
-q/-v, a config file under the command line, a log and the resolved settings beside every run's outputs, and
one artifacts layout that the commands share without flags."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import model as model_cli
from conftest import REPO, assert_one_line_error, run_main, subprocess_env, write_fake_embeddings
from lymphocytosis import __version__
from lymphocytosis.cli import extract as extract_cli_module
from lymphocytosis.cli import model as model_cli_module
from lymphocytosis.cli import tune as tune_cli_module
from lymphocytosis.cli.main import main as console_main

UNDOCUMENTED = {"help", "version", "verbose", "quiet"}


def all_options(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from all_options(sub)
        elif action.option_strings and action.dest not in UNDOCUMENTED:
            yield parser.prog, action


@pytest.mark.parametrize("module", [extract_cli_module, model_cli_module, tune_cli_module])
def test_every_option_says_its_default(module):
    parser = module.build_parser()
    for prog, action in all_options(parser):
        text = parser.formatter_class(prog)._get_help_string(action) if action.help else ""
        assert "default" in text, f"{prog} {action.option_strings[-1]}: help says no default ({text!r})"


def test_help_of_every_command_prints():
    for argv in (["extract", "--help"], ["cv", "--help"], ["fit", "--help"], ["predict", "--help"], ["report", "--help"],
                 ["tune", "--help"], ["--help"]):
        result = run_main(console_main, argv)
        assert result.code == 0 and "usage:" in result.stdout, argv
    assert f"lymphocytosis {__version__}" in run_main(console_main, ["--version"]).stdout
    assert_one_line_error(run_main(console_main, ["fly"]), "unknown command 'fly'")


def test_the_installed_command_runs_the_same_code(fake_embeddings, tmp_path):
    """`lymphocytosis cv ...` and `python model.py cv ...` are the same command (here through the module)."""
    args = ["--embeddings", str(fake_embeddings), "--params", "default", "--folds", "3", "--repeats", "1", "-q"]
    a = run_main(console_main, ["cv", *args, "--cv-dir", str(tmp_path / "a"), "--json", str(tmp_path / "a.json")])
    b = run_main(model_cli.main, ["cv", *args, "--cv-dir", str(tmp_path / "b"), "--json", str(tmp_path / "b.json")])
    assert a.code == b.code == 0 and a.stdout == b.stdout
    assert json.loads((tmp_path / "a.json").read_text())["oof"] == json.loads((tmp_path / "b.json").read_text())["oof"]


def test_config_file_under_the_command_line(fake_embeddings, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f'embeddings = ["{fake_embeddings}"]\nparams = "default"\n[cv]\nfolds = 3\nrepeats = 2\n'
                      f'seed = 4\ncv-dir = "{tmp_path / "cv"}"\n[tune]\ntrials = 5\n')
    result = run_main(model_cli.main, ["cv", "--config", str(config), "--repeats", "1", "--json", str(tmp_path / "r.json"),
                                       "-q"])
    assert result.code == 0, result.stderr
    document = json.loads((tmp_path / "r.json").read_text())
    assert (document["folds"], document["repeats"], document["seed"]) == (3, 1, 4)  # file's folds/seed, flag's repeats
    config.write_text(config.read_text() + "[fit]\nfolds = 3\n")
    result = run_main(model_cli.main, ["fit", "--config", str(config), "--model-dir", str(tmp_path / "m")])
    assert_one_line_error(result, str(config), "[fit] has no setting 'folds'")
    config.write_text("folds = [")
    assert_one_line_error(run_main(model_cli.main, ["cv", "--config", str(config)]), str(config), "not valid TOML")
    config.write_text("[cv]\nrepeats = 0\n")
    assert_one_line_error(run_main(model_cli.main, ["cv", "--config", str(config), "--embeddings", str(fake_embeddings)]),
                          "argument --repeats: 0 is out of range")


def test_every_run_leaves_its_log_and_resolved_settings(tmp_path):
    embeddings = write_fake_embeddings(tmp_path)
    result = run_main(model_cli.main, ["cv", "--embeddings", str(embeddings), "--params", "default", "--folds", "3",
                                       "--repeats", "1"])
    assert result.code == 0, result.stderr
    logs = sorted((tmp_path / "logs").iterdir())
    assert [p.suffix for p in logs] == [".log", ".toml"] and logs[0].stem.startswith("cv-")
    assert "wrote cross-validation results" in logs[0].read_text()
    settings = tomllib.loads(logs[1].read_text())["cv"]
    assert settings["folds"] == 3 and settings["repeats"] == 1 and settings["cv-dir"] == str(tmp_path / "cv")
    # the settings file runs the same command again
    again = run_main(model_cli.main, ["cv", "--config", str(logs[1]), "--json", str(tmp_path / "again.json"), "-q"])
    assert again.code == 0, again.stderr
    assert json.loads((tmp_path / "again.json").read_text())["repeats"] == 1


def test_one_artifacts_layout(tmp_path):
    """cv, fit, predict and report find each other's outputs beside the embeddings, without flags."""
    embeddings = write_fake_embeddings(tmp_path / "artifacts" / "dlmi")
    base = ["--embeddings", str(embeddings), "--params", "default", "-q"]
    for command in (["cv", "--folds", "3", "--repeats", "1"], ["fit"], ["predict"],
                    ["report", "--folds", "3", "--repeats", "1", "--patients", "none"]):
        args = [a for a in base if command[0] != "predict" or a not in ("--params", "default")]
        result = run_main(model_cli.main, [command[0], *args, *command[1:]])
        assert result.code == 0, (command, result.stderr)
    home = embeddings.parent
    assert {"cv", "model", "predictions.csv", "submission.csv", "report", "logs"} <= {p.name for p in home.iterdir()}


def test_quiet_runs_print_no_progress_or_info(fake_embeddings, tmp_path):
    result = run_main(model_cli.main, ["cv", "--embeddings", str(fake_embeddings), "--params", "default", "--folds", "3",
                                       "--repeats", "1", "--cv-dir", str(tmp_path / "cv"), "-q"])
    assert result.code == 0 and result.stderr == ""


def test_a_bug_is_one_line_with_its_log(fake_embeddings, tmp_path, monkeypatch):
    from lymphocytosis.model import evaluation

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(evaluation, "cross_validate", broken)
    result = run_main(model_cli.main, ["cv", "--embeddings", str(fake_embeddings), "--params", "default", "--folds", "3",
                                       "--repeats", "1", "--cv-dir", str(tmp_path / "cv")])
    assert result.code == 3 and "Traceback" not in result.stderr
    line = [x for x in result.stderr.splitlines() if x.startswith("error:")][0]
    assert "internal error (ZeroDivisionError: a bug)" in line
    log = Path(line.split("details in ")[1])
    assert "Traceback" in log.read_text() and "ZeroDivisionError" in log.read_text()


def test_pip_install_gives_the_command(tmp_path):
    """`pip install .` into a new environment puts `lymphocytosis` on its PATH (the dependencies are this
    environment's, made visible with a .pth file, so the test installs only the package itself)."""
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".*", "artifacts", "data", "build", "*.egg-info",
                                                                "__pycache__", "tests", "benchmarks"))
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--quiet", str(source)],
                             capture_output=True, text=True, env=subprocess_env())
    assert install.returncode == 0, install.stderr[-3000:]
    for argv, expected in ((["--version"], f"lymphocytosis {__version__}"), (["cv", "--help"], "usage: lymphocytosis cv"),
                           (["extract", "--help"], "usage: lymphocytosis extract")):
        result = subprocess.run([str(venv / "bin" / "lymphocytosis"), *argv], capture_output=True, text=True,
                                cwd=tmp_path)
        assert result.returncode == 0 and expected in result.stdout, result.stderr
