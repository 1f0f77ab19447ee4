"""What a user of the commands sees: the installed `lymphocytosis` command, --help with every default, --version,
-q/-v, a config file under the command line, a log and the resolved settings beside every run's outputs, and
one artifacts layout that the commands share without flags."""

from __future__ import annotations

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
from lymphocytosis.cli.catalog import COMMANDS, MODEL_COMMANDS, command_options
from lymphocytosis.cli.common import Run
from lymphocytosis.cli.main import main as console_main

UNDOCUMENTED = {"help", "version", "verbose", "quiet"}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_option_says_its_default(command):
    for option in command_options(command):
        if option.dest not in UNDOCUMENTED:
            text = option.help_text() or ""
            assert "default" in text, f"{command} {option.name}: help says no default ({text!r})"


@pytest.mark.parametrize("module", [extract_cli_module, model_cli_module, tune_cli_module])
def test_help_shows_each_default_once(module, capsys):
    """The default is written once, by the option table, and argparse fills in its value."""
    parser = module.build_parser()
    for argv in ([["--help"]] if module is not model_cli_module else [[name, "--help"] for name in MODEL_COMMANDS]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        text = " ".join(capsys.readouterr().out.split())
        assert "default: " in text and "%(default)" not in text and "(default: (default:" not in text


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
                          str(config), "[cv] repeats = 0: 0 is out of range")


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


# --- settings files: strict, and what every run writes reads back ---------------------------------------------------


@pytest.mark.parametrize("text, fragments", [
    ("colour = 3\n", ["unknown setting 'colour'", "folds", "trials"]),
    ("[crossval]\nfolds = 3\n", ["unknown table [crossval]", "[cv], [fit]"]),
    ("cv = 3\n", ["cv = 3: cv is a command", "[cv] table"]),
    ("[tune]\nnested = \"yes\"\n", ['[tune] nested = "yes"', "--nested is a flag, true or false"]),
    ("folds = [3, 4]\n", ["folds = [3, 4]", "a list, but --folds takes one value"]),
    ("[cv]\nfolds = \"three\"\n", ['[cv] folds = "three"', "'three' is not an integer"]),
    ("[cv]\nrepeats = true\n", ["[cv] repeats = true", "--repeats takes a number, not bool"]),
    ("[extract]\nfeatures = \"all\"\n", ['[extract] features = "all"', "--features is one of pooled, multiscale"]),
    ("[tune]\ntrials = 0\n", ["[tune] trials = 0", "0 is out of range"]),  # checked whole, whichever command runs
    ("[fit]\nfolds = 3\n", ["[fit] has no setting 'folds'", "model-dir"]),
    ("[cv]\ncv-dir = \"a\"\ncv_dir = \"b\"\n", ["[cv] cv_dir and [cv] cv-dir are the same setting"]),
    ("config = \"other.toml\"\n", ["unknown setting 'config'"]),
    ("[cv.more]\nfolds = 3\n", ["[cv] has no setting 'more'"]),
    ("[cv]\ncv-dir = \"res\\u0000ults\"\n", ["[cv] cv-dir: holds a NUL character"]),
    ("root = \"/data\\u0000/dlmi\"\n", ["root: holds a NUL character"]),
])
def test_config_file_is_strict(tmp_path, text, fragments):
    """Whatever a settings file cannot mean is one line naming the file and the key, before anything runs."""
    embeddings = write_fake_embeddings(tmp_path)
    config = tmp_path / "run.toml"
    config.write_text(text)
    result = run_main(model_cli.main, ["cv", "--config", str(config), "--embeddings", str(embeddings), "--params", "default"])
    assert_one_line_error(result, f"--config {config}: ", *fragments, exact_one_line=True)
    assert not (tmp_path / "logs").exists() and not (tmp_path / "cv").exists()


def test_config_values_are_defaults_under_the_command_line(fake_embeddings, tmp_path):
    """A command's table over the top level, the command line over both; a list on the command line replaces
    the file's (whatever form the option takes there), and a flag in the file works."""
    config = tmp_path / "run.toml"
    config.write_text(f'embeddings = ["{tmp_path / "missing.h5"}"]\nrepeats = 3\nquiet = true\n'
                      f'[cv]\nrepeats = 1\nfolds = 3\nparams = "default"\ncv-dir = "{tmp_path / "cv"}"\n')
    for given in (["--embeddings", str(fake_embeddings)], [f"--embeddings={fake_embeddings}"], ["--embed", str(fake_embeddings)]):
        json_path = tmp_path / "r.json"
        result = run_main(model_cli.main, ["cv", "--config", str(config), *given, "--json", str(json_path)])
        assert result.code == 0 and result.stderr == "", (given, result.stderr)  # quiet from the file
        document = json.loads(json_path.read_text())
        assert (document["folds"], document["repeats"]) == (3, 1)
        assert [e["path"] for e in document["embeddings"]] == [str(fake_embeddings)]


def test_settings_file_round_trip(tmp_path, monkeypatch):
    """The settings a run writes are valid TOML, non-ASCII written as it is, passwords masked, and --config reads
    them back into the same settings."""
    from lymphocytosis.cli.config import read_config, settings_toml

    home = tmp_path / "données-é"
    embeddings = write_fake_embeddings(home)
    result = run_main(model_cli.main, ["cv", "--embeddings", str(embeddings), "--params", "default", "--folds", "3",
                                       "--repeats", "1", "-q"])
    assert result.code == 0, result.stderr
    written = next((home / "logs").glob("cv-*.toml"))
    assert "données-é" in written.read_text(encoding="utf-8") and "\\u00e9" not in written.read_text(encoding="utf-8")
    assert read_config(written)["cv"]["cv-dir"] == str(home / "cv")
    again = run_main(model_cli.main, ["cv", "--config", str(written), "--json", str(tmp_path / "again.json"), "-q"])
    assert again.code == 0, again.stderr
    assert json.loads((tmp_path / "again.json").read_text())["embeddings"][0]["path"] == str(embeddings)

    settings = {"embeddings": [embeddings], "storage": "postgresql://tuner:s3cr3t-pw@db.example/study", "trials": 3,
                "timeout": 1.5, "study_name": 'quote " back\\slash \x7f tab\t é', "nested": False}
    path = tmp_path / "tune.toml"
    path.write_text(settings_toml(settings, "tune", "by hand"), encoding="utf-8")
    assert "s3cr3t-pw" not in path.read_text(encoding="utf-8")
    table = read_config(path)["tune"]
    assert table["storage"] == "postgresql://tuner:***@db.example/study" and table["study-name"] == settings["study_name"]
    args = tune_cli_module.parse_args(["--config", str(path)])
    assert (args.embeddings, args.trials, args.timeout, args.study_name, args.nested) == (
        [embeddings], 3, 1.5, settings["study_name"], False)
    odd = settings_toml({"root": Path("/data/\udcff"), "trials": 3}, "tune", "a file name that is not UTF-8")
    assert tomllib.loads(odd) == {"tune": {"trials": 3}}  # the unwritable path left out, said in a comment


# --- the run's record: only for runs that start, everything logged, no library chatter ------------------------------


@pytest.mark.parametrize("argv", [
    ["cv", "--cv-dir", "{embeddings}"],                                  # an output onto an input
    ["predict", "--out", "{csv}"],
    ["cv", "--params", "default", "--json", "{embeddings}"],
])
def test_a_refused_command_leaves_no_log(tmp_path, argv):
    embeddings = write_fake_embeddings(tmp_path)
    fill = {"embeddings": str(embeddings), "csv": str(tmp_path / "dlmi" / "trainset" / "trainset_true.csv"), "tmp": tmp_path}
    result = run_main(model_cli.main, [argv[0], "--embeddings", str(embeddings), *(a.format(**fill) for a in argv[1:])])
    assert_one_line_error(result)
    assert not (tmp_path / "logs").exists()


def test_extract_refused_leaves_no_log(synthetic_root, tmp_path):
    out = tmp_path / "out" / "embeddings.h5"
    for extra, fragment in ((["--weights", str(tmp_path / "none.pth")], "weights file not found"),
                            (["--model", "dinobloom-s"], "needs --weights FILE"),
                            (["--device", "cuda:99"], "--device cuda:99"),
                            (["--out", str(synthetic_root / "trainset" / "trainset_true.csv")], "an input of this run")):
        result = run_main(extract_cli_module.main, ["--root", str(synthetic_root), "--out", str(out), *extra])
        assert_one_line_error(result, fragment)
    assert not (tmp_path / "out").exists() and not (synthetic_root / "trainset" / "logs").exists()


def test_run_log_has_what_came_before_it_and_no_library_chatter(tmp_path, monkeypatch):
    """Messages logged while the inputs were checked reach the log file; third-party DEBUG lines do not."""
    import logging

    from lymphocytosis.model import evaluation

    embeddings = write_fake_embeddings(tmp_path, empty=("F1",))  # load_cohort warns, before the run's log starts
    original = evaluation.compare

    def noisy(*args, **kwargs):
        for name in ("matplotlib.font_manager", "PIL.PngImagePlugin", "h5py._conv", "numba.core", "urllib3.connectionpool",
                     "filelock", "fsspec.local"):
            logging.getLogger(name).debug("library chatter from %s", name)
        logging.getLogger("lymphocytosis.model.evaluation").debug("our own debugging message")
        return original(*args, **kwargs)

    monkeypatch.setattr(evaluation, "compare", noisy)
    result = run_main(model_cli.main, ["cv", "--embeddings", str(embeddings), "--params", "default", "--folds", "3",
                                       "--repeats", "1", "-q"])
    assert result.code == 0, result.stderr
    text = next((tmp_path / "logs").glob("cv-*.log")).read_text()
    assert "patient F1 has 0 cells" in text and "our own debugging message" in text
    assert "library chatter" not in text


def test_default_outputs_come_from_one_place(tmp_path, monkeypatch):
    """Every command's default outputs are `artifact_paths` of the (first) embeddings file; extract's output is
    artifacts/<dataset>/."""
    from lymphocytosis.defaults import ArtifactPaths, artifact_paths, dataset_home, extraction_path

    embeddings = tmp_path / "artifacts" / "dlmi" / "embeddings.h5"
    paths = artifact_paths(embeddings)
    assert paths == ArtifactPaths(embeddings.parent)
    expected = {"cv": {"cv_dir": paths.cv_dir}, "fit": {"model_dir": paths.model_dir},
                "predict": {"model_dir": paths.model_dir, "out": paths.predictions, "submission": paths.submission},
                "report": {"cv_dir": paths.cv_dir, "out_dir": paths.report_dir}}
    for command, values in expected.items():
        run = Run()
        args = model_cli_module.parse_args([command, "--embeddings", str(embeddings)], run)
        assert {k: getattr(args, k) for k in values} == values and run.home == paths.home
    run = Run()
    args = tune_cli_module.parse_args(["--embeddings", str(embeddings)], run)
    assert (args.storage, args.best_params, run.home) == (paths.tune_storage, paths.best_params, paths.home)
    assert paths.tune_storage == f"sqlite:///{embeddings.parent / 'tune.sqlite3'}"
    root = tmp_path / "data" / "dlmi"
    root.mkdir(parents=True)
    args = extract_cli_module.resolve(extract_cli_module.build_parser().parse_args(["--root", str(root)]))
    assert args.out == extraction_path(root) == dataset_home(root) / "embeddings.h5" == Path("artifacts/dlmi/embeddings.h5")
    args = extract_cli_module.resolve(extract_cli_module.build_parser().parse_args(["--root", str(root), "--measure", "colour"]))
    assert args.out == Path("artifacts/dlmi/colour.h5")


def test_run_state_is_one_object_handed_down(fake_embeddings, tmp_path):
    """How a run was started, how much it says and where its log is live in its `Run`, not in module globals."""
    from lymphocytosis.cli import common

    assert Run(console=True).program("extract.py", "extract") == "lymphocytosis extract"
    assert Run().program("extract.py", "extract") == "extract.py"
    assert Run(quiet=True).progress.bar(total=1).disable is True
    assert not any(hasattr(common, name) for name in ("CONSOLE", "RUN_LOG", "QUIET"))
    run = Run()
    args = model_cli_module.parse_args(["cv", "--embeddings", str(fake_embeddings), "-q"], run)
    assert run.quiet and not run.verbose and run.home == fake_embeddings.parent
    assert not any(name.startswith("_") for name in vars(args))  # nothing added to the parsed options
