#!/usr/bin/env python
"""Folds in threads: one 5-fold CV of the default configuration, on new folds each time, with 1 and with 2
threads alternately (LYMPHOCYTOSIS_THREADS's setting, passed as `threads`), in one process; the median wall
and CPU time of each, and whether both gave the same out-of-fold probabilities.

    python benchmarks/fold_threads.py --embeddings artifacts/dlmi/embeddings.h5 --rounds 5

The CPU time counts every thread of the process: CPU / wall near 2 means both cores were used. On a machine
busy with other work the second core is not free, and the wall times say little.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from lymphocytosis.model.cohort import load_cohort
from lymphocytosis.model.evaluation import cross_validate, repeated_folds
from lymphocytosis.model.tuned_params import Settings


def main():
    logging.basicConfig(level=logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embeddings", type=Path, default=Path("artifacts/embeddings.h5"))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cohort = load_cohort(args.embeddings)
    ids, settings = cohort.labelled_ids, Settings()
    cross_validate(cohort, settings.spec, settings.params, repeated_folds(ids, cohort.labels(ids), 5, 1, 0))  # statistics
    times: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    same = True
    for round_ in range(args.rounds):
        folds = repeated_folds(ids, cohort.labels(ids), 5, 1, 100 + round_)  # new folds: nothing remembered
        results = {}
        for threads in (1, 2):
            cohort.memo = type(cohort.memo)()  # forget the other run's fitted parts
            started, cpu = time.perf_counter(), time.process_time()
            results[threads] = cross_validate(cohort, settings.spec, settings.params, folds, threads=threads)
            times[threads].append((time.perf_counter() - started, time.process_time() - cpu))
        same = same and np.array_equal(results[1].probabilities, results[2].probabilities)
    print("| threads | wall (median) | CPU (median) | CPU / wall |")
    print("|---|---|---|---|")
    for threads, runs in times.items():
        wall, cpu = statistics.median(t[0] for t in runs), statistics.median(t[1] for t in runs)
        print(f"| {threads} | {wall:.3f} s | {cpu:.3f} s | {cpu / wall:.2f} |")
    print(f"\n{len(ids)} patients, {args.rounds} rounds; out-of-fold probabilities identical: {same}")


if __name__ == "__main__":
    main()
