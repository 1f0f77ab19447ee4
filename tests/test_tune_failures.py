"""Tuning workers when things go wrong around them: a database that goes away mid-study, a worker paused past
its heartbeat whose trial the others marked failed. One line naming the cause, or tuning goes on; the
best-parameters file is never left damaged; no password reaches a line or a file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest

import tune as tune_cli
from conftest import assert_one_line_error, run_main
from lymphocytosis.model import tuning
from lymphocytosis.model.study_storage import storage_failure

CV_DESIGN = ["--folds", "3", "--repeats", "1", "--seed", "0"]


class OperationalError(Exception):
    """Stands for the driver's error (psycopg's OperationalError), as the driver's module names it."""


OperationalError.__module__ = "psycopg"


def database_gone(message: str) -> optuna.exceptions.StorageInternalError:
    try:
        try:
            raise OperationalError(message)
        except OperationalError as driver:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit. This typically "
                                                         "happens due to invalid data in the commit, e.g. exceeding "
                                                         "max length.") from driver
    except optuna.exceptions.StorageInternalError as wrapped:
        return wrapped


@pytest.mark.parametrize("cause", [
    'connection failed: connection to server at "127.0.0.1", port 5433 failed: Connection refused',
    'connection failed: FATAL:  password authentication failed for user "tuner"',
])
def test_a_database_that_goes_away_is_one_line_naming_the_cause(fake_embeddings, tmp_path, monkeypatch, cause):
    best = tmp_path / "best_params.json"
    url = f"sqlite:///{tmp_path}/t.sqlite3"
    assert run_main(tune_cli.main, ["--embeddings", str(fake_embeddings), *CV_DESIGN, "--storage", url,
                                    "--best-params", str(best), "--trials", "2"]).code == 0
    before = best.read_bytes()

    def fail(*args, **kwargs):
        raise database_gone(cause)

    monkeypatch.setattr(tuning, "run_study", fail)
    result = run_main(tune_cli.main, ["--embeddings", str(fake_embeddings), *CV_DESIGN, "--storage", url,
                                      "--best-params", str(best), "--trials", "4"])
    line = assert_one_line_error(result, f"--storage {url}: the database failed during tuning ({cause})",
                                 "rerun the same command to resume")
    assert "exceeding max length" not in line and "internal error" not in result.stderr
    after = json.loads(best.read_text())  # intact: complete, and the same best settings
    assert {k: after[k] for k in ("params", "feature_spec") if k in after} == \
           {k: json.loads(before)[k] for k in ("params", "feature_spec") if k in after} and "params" in after


def test_the_cause_is_masked():
    url = "postgresql://tuner@db/lymph?password=hunter22&sslmode=require"
    failure = storage_failure(database_gone('password authentication failed (password "hunter22")'), url, Path("b.json"))
    assert failure is not None and "hunter22" not in str(failure) and "password=***" in str(failure)
    assert storage_failure(ValueError("a bug of ours"), url, Path("b.json")) is None


def test_a_trial_failed_by_others_while_paused_is_dropped_and_tuning_goes_on(caplog):
    study = optuna.create_study(study_name="paused")
    calls = []

    def optimize(left):
        calls.append(left)
        if len(calls) == 1:
            raise ValueError("Cannot tell a FAIL trial.")
        for _ in range(left):
            study.tell(study.ask(), 0.5)

    tuning.optimize_until_done(study, optimize, 3)
    assert calls == [3, 3] and tuning.finished_trials(study) == 3
    assert "marked failed by another worker while this one was paused" in caplog.text
    with pytest.raises(ValueError, match="not ours"):
        tuning.optimize_until_done(study, lambda left: (_ for _ in ()).throw(ValueError("not ours")), 5)


def test_a_password_in_the_query_string_reaches_no_line_and_no_file(fake_embeddings, tmp_path):
    url = "postgresql://tuner@127.0.0.1:9/lymph?password=hunter22&sslmode=disable"  # port 9: refused at once
    result = run_main(tune_cli.main, ["--embeddings", str(fake_embeddings), *CV_DESIGN, "--storage", url,
                                      "--best-params", str(tmp_path / "best.json"), "--trials", "1"])
    line = assert_one_line_error(result, "--storage postgresql://tuner@127.0.0.1:9/lymph?password=***&sslmode=disable")
    assert "hunter22" not in result.stderr + result.stdout and "Connection refused" in line
    written = [p for p in Path(fake_embeddings).parent.rglob("*") if p.is_file()] + list(tmp_path.rglob("*"))
    assert not [p for p in written if p.is_file() and b"hunter22" in p.read_bytes()]


def test_postgres_stopped_mid_study_is_one_line_and_best_params_stay_whole(fake_embeddings, tmp_path):
    """A real server stopped (immediate shutdown) while a worker tunes: exit 2, one line naming the cause."""
    import subprocess
    import sys
    import time

    from conftest import REPO, subprocess_env
    from postgres import server_bin_dir, start_server

    if server_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries not found")
    server = start_server()
    try:
        url = server.create_database("stopped")
        best = tmp_path / "best_params.json"
        worker = subprocess.Popen([sys.executable, str(REPO / "tune.py"), "--embeddings", str(fake_embeddings),
                                   *CV_DESIGN, "--storage", url, "--trials", "500", "--best-params", str(best)],
                                  cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        deadline = time.monotonic() + 90
        while not best.is_file() and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.2)  # a first trial finished and saved
        assert best.is_file(), worker.communicate(timeout=5)
        server._run("pg_ctl", "-D", str(server.base / "data"), "-m", "immediate", "stop")
        out, err = worker.communicate(timeout=90)
    finally:
        try:
            server.stop()
        except RuntimeError:  # stopped above already
            shutil.rmtree(server.base, ignore_errors=True)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert worker.returncode == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert "the database failed during tuning" in errors[0] and "internal error" not in err
    assert server.password not in out + err
    assert json.loads(best.read_text())["params"]


def test_a_worker_paused_past_its_heartbeat_goes_on_cleanly(fake_embeddings, tmp_path):
    """SIGSTOP mid-trial for longer than the grace period, another worker fails its trial, SIGCONT: exit 0, one
    warning, no traceback."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO, subprocess_env
    from postgres import server_bin_dir, start_server

    if server_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries not found")
    server = start_server()
    try:
        url = server.create_database("paused")

        def command(trials: int, best: str) -> list[str]:
            return [sys.executable, str(REPO / "tune.py"), "--embeddings", str(fake_embeddings), *CV_DESIGN, "--storage",
                    url, "--heartbeat", "1", "--trials", str(trials), "--best-params", str(tmp_path / best)]

        paused = subprocess.Popen(command(12, "a.json"), cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 90
        while not (tmp_path / "a.json").is_file() and time.monotonic() < deadline and paused.poll() is None:
            time.sleep(0.2)
        time.sleep(0.3)  # into its next trial
        paused.send_signal(signal.SIGSTOP)
        time.sleep(4)  # past twice the heartbeat
        if server.open_transactions("paused"):  # stopped inside a write: its locks hold the other worker until SIGCONT
            paused.send_signal(signal.SIGCONT)
            paused.communicate(timeout=180)
            pytest.skip("the pause fell inside a database transaction this time: nothing to test")  # rare, timing
        other = subprocess.run(command(4, "b.json"), cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                               timeout=120)
        paused.send_signal(signal.SIGCONT)
        out, err = paused.communicate(timeout=180)
    finally:
        server.stop()
    assert other.returncode == 0, other.stderr
    assert paused.returncode == 0 and "Traceback" not in err and "error:" not in err, err
    if "marked failed by another worker" not in err:
        pytest.skip("the pause fell between two trials this time: nothing was failed")  # rare, timing
    assert err.count("marked failed by another worker while this one was paused") == 1
