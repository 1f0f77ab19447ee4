"""Several tune.py workers sharing one study: real processes on a real PostgreSQL server (tests/postgres.py) and on
a journal file. They all finish on a fresh database (no table-creation race), stop at the study's total of
finished trials, do not repeat each other's parameters, survive a worker killed with SIGKILL, and never show
the database password.

Runs on hand-made embeddings (`fake_embeddings`) with 3 folds x 1 repeat per trial, so each trial is fast.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

import tune as tune_cli
from conftest import REPO, assert_one_line_error, run_main, subprocess_env
from lymphocytosis.model import tuning
from lymphocytosis.model.study_storage import open_storage, sqlalchemy_url
from lymphocytosis.model.trial_sampler import TrialSeededTPESampler
from lymphocytosis.passwords import masked

CV_DESIGN = ["--folds", "3", "--repeats", "1", "--seed", "0"]
STUDY = "workers"
WORKER_TIMEOUT_S = 90


def start_worker(embeddings: Path, storage: str, trials: int, best: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, str(REPO / "tune.py"), "--embeddings", str(embeddings), *CV_DESIGN, "--study-name", STUDY,
               "--storage", storage, "--trials", str(trials), "--best-params", str(best), "-v", *extra]
    return subprocess.Popen(command, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(workers: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of each worker, once all have ended."""
    outputs = [worker.communicate(timeout=WORKER_TIMEOUT_S) for worker in workers]
    return [(worker.returncode, out, err) for worker, (out, err) in zip(workers, outputs)]


def assert_all_succeeded(results: list[tuple[int, str, str]]) -> None:
    for code, out, err in results:
        assert code == 0 and "Traceback" not in err, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"


def load(storage: str) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=open_storage(storage))


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=tuning.FINISHED)


def identical_pairs(trials: list[optuna.trial.FrozenTrial]) -> int:
    keys = [json.dumps(t.params, sort_keys=True) for t in trials]
    return sum(keys.count(k) - 1 for k in set(keys))


def attrs_text(study: optuna.Study) -> str:
    """Everything the study stores besides parameters and values: where a password must not hide."""
    trials = [{"user": t.user_attrs, "system": t.system_attrs} for t in study.trials]
    system = study._storage.get_study_system_attrs(study._study_id)  # Study has no public accessor for these
    return json.dumps({"user": study.user_attrs, "system": system, "trials": trials}, default=str)


def test_three_workers_share_a_fresh_postgres_study(fake_embeddings, postgres, tmp_path):
    url = postgres.create_database("three_workers")  # fresh: the workers race to create Optuna's tables
    best = tmp_path / "best_params.json"
    results = finish([start_worker(fake_embeddings, url, 12, best) for _ in range(3)])
    assert_all_succeeded(results)
    study = load(url)
    done = finished(study)
    assert 12 <= len(done) <= 14, [t.state for t in study.trials]  # the total, within N-1 = 2
    assert identical_pairs(done) <= 1
    assert all(any("trial " in line for line in err.splitlines()) for _, _, err in results)  # every worker took part
    saved = json.loads(best.read_text())
    assert saved["storage"] == masked(url) and "***" in saved["storage"]
    run_logs = [p.read_text() for p in (fake_embeddings.parent / "logs").glob("tune-*")]  # .log and .toml
    texts = [out + err for _, out, err in results] + [best.read_text(), attrs_text(study), *run_logs]
    assert not [text for text in texts if postgres.password in text]


def test_concurrent_opening_of_a_fresh_database(postgres):
    """Four threads open the storage at the same instant: on PostgreSQL, all but one would fail on the
    concurrent CREATE without the retry (UniqueViolation on pg_type_typname_nsp_index)."""
    url = postgres.create_database("opening_race")
    barrier, errors = threading.Barrier(4), []

    def open_now():
        barrier.wait()
        try:
            open_storage(url)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_now) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert optuna.create_study(storage=open_storage(url), study_name="opened").study_name == "opened"


def running_with_heartbeat(postgres, database: str) -> list[int]:
    """Numbers of RUNNING trials whose heartbeat was recorded (Optuna fails only those when they go stale)."""
    import psycopg

    query = ("SELECT t.number FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
             "WHERE t.state = 'RUNNING'")
    try:
        with psycopg.connect(host="127.0.0.1", port=postgres.port, user=postgres.user, password=postgres.password,
                             dbname=database) as connection:
            return [row[0] for row in connection.execute(query).fetchall()]
    except psycopg.errors.UndefinedTable:
        return []  # the worker has not created the tables yet


def kill_mid_trial(worker: subprocess.Popen, postgres, database: str, timeout: float = 60) -> list[int]:
    """SIGKILL `worker` while one of its trials is RUNNING (checked with the worker stopped); its numbers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.poll() is None, worker.communicate()
        worker.send_signal(signal.SIGSTOP)
        running = running_with_heartbeat(postgres, database)
        if running:
            worker.kill()
            worker.communicate()
            return running
        worker.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    worker.kill()
    raise AssertionError("the worker never had a running trial")


def test_killed_worker_trial_is_failed_and_not_counted(fake_embeddings, postgres, tmp_path):
    url = postgres.create_database("killed_worker")
    heartbeat = ["--heartbeat", "1"]  # a trial silent for 2 s is declared dead
    victim = start_worker(fake_embeddings, url, 100, tmp_path / "a.json", *heartbeat)
    killed = kill_mid_trial(victim, postgres, "killed_worker")
    killed_at = time.monotonic()
    total = len(finished(load(url))) + 4
    time.sleep(max(0.0, killed_at + 2.5 - time.monotonic()))
    results = finish([start_worker(fake_embeddings, url, total, tmp_path / "b.json", *heartbeat)])
    assert_all_succeeded(results)
    study = load(url)
    states = {t.number: t.state for t in study.trials}
    assert all(states[number] == optuna.trial.TrialState.FAIL for number in killed), states
    assert len(finished(study)) == total  # one worker: exactly the total, the failed trial not counted
    assert optuna.trial.TrialState.RUNNING not in states.values()


def test_two_workers_on_a_journal_file(fake_embeddings, tmp_path):
    storage = f"journal://{tmp_path}/shared/study.log"  # journal:///abs/path
    results = finish([start_worker(fake_embeddings, storage, 8, tmp_path / "best.json") for _ in range(2)])
    assert_all_succeeded(results)
    study = load(storage)
    assert 8 <= len(finished(study)) <= 9
    assert identical_pairs(finished(study)) <= 1
    assert json.loads((tmp_path / "best.json").read_text())["storage"] == storage


def test_workers_seeded_alike_draw_different_trials():
    """Two workers, same seed, same (empty) history, trials running at once: different parameters; and the same
    trial number with the same history gives the same parameters (a single worker stays deterministic)."""
    storage = optuna.storages.InMemoryStorage()
    workers = [optuna.create_study(storage=storage, study_name="s", load_if_exists=True, sampler=TrialSeededTPESampler(0))
               for _ in range(2)]
    first, second = (worker.ask() for worker in workers)
    draws = [trial.suggest_float("x", 0, 1) for trial in (first, second)]
    assert first.number != second.number and draws[0] != draws[1]
    replay = optuna.create_study(sampler=TrialSeededTPESampler(0)).ask()
    assert replay.number == first.number and replay.suggest_float("x", 0, 1) == draws[0]


# --- errors: one line, no password ---------------------------------------------------------------------------------


def tune_in_process(embeddings: Path, storage: str, tmp_path: Path):
    best = tmp_path / "never.json"
    result = run_main(tune_cli.main, ["--embeddings", str(embeddings), *CV_DESIGN, "--storage", storage, "--trials", "1",
                                      "--best-params", str(best)])
    assert not best.exists()
    return result


def test_wrong_password_is_one_line_without_it(fake_embeddings, postgres, tmp_path):
    wrong = "not-the-pw-" + postgres.password[::-1]
    result = tune_in_process(fake_embeddings, postgres.url("postgres", password=wrong), tmp_path)
    line = assert_one_line_error(result, "--storage", "***@127.0.0.1", "password authentication failed")
    assert wrong not in result.stderr + result.stdout and postgres.password not in line


def test_unreachable_server_is_one_line(fake_embeddings, postgres, tmp_path):
    from postgres import free_port

    url = f"postgresql://{postgres.user}:{postgres.password}@127.0.0.1:{free_port()}/postgres"
    result = tune_in_process(fake_embeddings, url, tmp_path)
    assert_one_line_error(result, "--storage", "cannot open", "OperationalError")
    assert postgres.password not in result.stderr + result.stdout


@pytest.mark.parametrize("url, module, package", [
    ("postgresql://tuner:secret-pw@db.example/study", "psycopg", "psycopg[binary]"),
    ("mysql://tuner:secret-pw@db.example/study", "MySQLdb", "mysqlclient"),
])
def test_missing_driver_names_the_module(fake_embeddings, tmp_path, monkeypatch, url, module, package):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if `psycopg[binary]` were not installed
    result = tune_in_process(fake_embeddings, url, tmp_path)
    assert_one_line_error(result, f"'{module}'", f"pip install '{package}'", "tuner:***@db.example")
    assert "secret-pw" not in result.stderr + result.stdout


def test_urls_masked_and_postgres_means_psycopg():
    assert masked("postgresql://u:p%40ss@h:5/db") == "postgresql://u:***@h:5/db"
    assert masked("sqlite:///artifacts/tune.sqlite3") == "sqlite:///artifacts/tune.sqlite3"
    assert masked("no url://u:pw@h") == "no url://u:***@h"
    assert masked("postgresql://u:p@s/s@h/db") == "postgresql://u:***@h/db"  # unencoded "@" and "/": hidden whole
    assert masked('{"storage": "mysql://u:pw@h/db", "x": "a@b"}') == '{"storage": "mysql://u:***@h/db", "x": "a@b"}'
    # a driver's message may quote the password on its own, plain or %-encoded: masked once the URL was seen
    assert masked("auth failed (p@ss9 / p%40ss9)", "postgresql://u:p%40ss9@h/db") == "auth failed (*** / ***)"
    assert masked("later: p@ss9") == "later: ***"
    assert sqlalchemy_url("postgresql://u:p%40ss@h/db") == "postgresql+psycopg://u:p%40ss@h/db"
    assert sqlalchemy_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert sqlalchemy_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
