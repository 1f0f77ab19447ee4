#!/usr/bin/env python
"""Wall time of 1, 2, ... `tune.py` workers sharing one study for the same total of trials, with the study's
finished-trial count and its number of repeated parameter sets.

    python benchmarks/tune_workers.py --embeddings artifacts/embeddings.h5 --trials 20 --workers 1 2 3 \\
        --storage postgresql://user@host/db          # any --storage tune.py takes (password: PGPASSWORD)
    python benchmarks/tune_workers.py --embeddings artifacts/embeddings.h5 --trials 20 --workers 1 2 3 \\
        --throwaway-postgres                         # a local server for the run (tests/postgres.py)

Every measurement starts `tune.py` processes at once on a new study (fresh name) in the same storage, whose
tables are created before the clock starts; the time includes each process's start-up (imports, loading the
embeddings), as a user would see it. Best-parameters files go to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # postgres.py, for --throwaway-postgres

import optuna

from lymphocytosis.model.study_storage import open_storage
from lymphocytosis.model.tuning import FINISHED
from lymphocytosis.passwords import masked

REPO = Path(__file__).resolve().parents[1]


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_workers(args, storage: str, n_workers: int, out: Path, env: dict) -> dict:
    name = f"bench-{n_workers}w-{uuid.uuid4().hex[:8]}"
    command = [sys.executable, str(REPO / "tune.py"), "--embeddings", str(args.embeddings), "--storage", storage,
               "--study-name", name, "--trials", str(args.trials), "--seed", str(args.seed),
               "--best-params", str(out / f"{name}.json")]
    started, cpu_before = time.perf_counter(), children_cpu_s()
    workers = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for _ in range(n_workers)]
    errors = [worker.communicate()[1] for worker in workers]
    seconds, cpu = time.perf_counter() - started, children_cpu_s() - cpu_before
    failed = [err.strip().splitlines()[-1] for worker, err in zip(workers, errors) if worker.returncode != 0]
    if len(failed) == n_workers:
        raise SystemExit(f"every worker failed: {failed[0]}")
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    done = study.get_trials(deepcopy=False, states=FINISHED)
    keys = [json.dumps(t.params, sort_keys=True) for t in done]
    trial_s = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done) / max(1, len(done))
    return {"workers": n_workers, "seconds": seconds, "cpu": cpu, "trial_s": trial_s, "finished": len(done),
            "all_trials": len(study.trials), "duplicates": len(keys) - len(set(keys)), "best": study.best_value,
            "failed_workers": failed}


def measure(args, storage: str, env: dict | None = None) -> None:
    env = {**os.environ, **(env or {})}
    os.environ.update(env)  # this process opens the storage too
    open_storage(storage)  # tables created before timing
    print(f"storage {masked(storage)}; --trials {args.trials} (the study's total)")
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    print("| workers | wall time | CPU time, all workers | mean trial time | finished trials | trials in all | repeated "
          "parameters | best CV |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as out:
        for n_workers in args.workers:
            row = run_workers(args, storage, n_workers, Path(out), env)
            print(f"| {row['workers']} | {row['seconds']:.1f} s | {row['cpu']:.1f} s | {row['trial_s']:.1f} s | "
                  f"{row['finished']} | {row['all_trials']} | {row['duplicates']} | {row['best']:.4f} |", flush=True)
            for error in row["failed_workers"]:
                print(f"  a worker failed: {error}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embeddings", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--storage", help="any tune.py --storage")
    where.add_argument("--throwaway-postgres", action="store_true", help="start a local PostgreSQL for the run")
    args = parser.parse_args()
    if args.storage:
        measure(args, args.storage)
        return
    from postgres import start_server

    server = start_server()
    try:
        server.create_database("bench")  # the password goes through PGPASSWORD, not the workers' command lines
        measure(args, f"postgresql://{server.user}@127.0.0.1:{server.port}/bench", {"PGPASSWORD": server.password})
    finally:
        server.stop()


if __name__ == "__main__":
    main()
