#!/usr/bin/env python
"""Wall time of 1, 2, ... `extract.py` workers sharing one extraction (the same command started N times on the
same output), each with a given number of torch threads, and how far each final file is from the first one.

    python benchmarks/extract_workers.py --root /data/dlmi --runs 1x2 2x2 2x1 1x1

A run `WxT` starts W `extract.py` processes at once, each with OMP_NUM_THREADS=T (torch's intra-op threads),
into a new output in a temporary folder; the time includes each process's start-up, as a user would see it.
On CPU the thread count changes the last bits of the embeddings (a different summation order), so files of
different T differ by ~1e-5 while files of the same T are bit-identical, whatever the number of workers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def parse_run(text: str) -> tuple[int, int]:
    workers, _, threads = text.partition("x")
    if not (workers.isdigit() and threads.isdigit() and int(workers) > 0 and int(threads) > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: expected WORKERSxTHREADS, e.g. 2x1")
    return int(workers), int(threads)


def run_workers(root: Path, out: Path, workers: int, threads: int, extra: list[str]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, str(REPO / "extract.py"), "--root", str(root), "--out", str(out), "-q", *extra]
    started = time.perf_counter()
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for _ in range(workers)]
    failures = [p.communicate()[1].strip() for p in processes if p.wait() != 0]
    seconds = time.perf_counter() - started
    if failures:
        sys.exit(f"a worker failed: {failures[0].splitlines()[-1]}")
    return seconds


def max_difference(a: Path, b: Path) -> tuple[float, int]:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        if sorted(fa["patients"]) != sorted(fb["patients"]):
            return float("inf"), 0
        worst, images = 0.0, 0
        for patient_id, group in fa["patients"].items():
            x, y = group["embeddings"][()], fb["patients"][patient_id]["embeddings"][()]
            if x.shape != y.shape:
                return float("inf"), 0
            images += len(x)
            if len(x):
                worst = max(worst, float(np.abs(x.astype(np.float64) - y).max()))
        return worst, images


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="challenge-layout dataset")
    parser.add_argument("--runs", type=parse_run, nargs="+", default=[(1, 2), (2, 2), (2, 1)],
                        help="WORKERSxTHREADS each (default 1x2 2x2 2x1)")
    parser.add_argument("--extract-args", default="", help="more extract.py options, e.g. '--crop 224'")
    args = parser.parse_args()
    print(f"dataset: {args.root}; {os.cpu_count()} cores")
    print("| workers x threads | wall time | images/s | largest difference from the first row's file |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        first = None
        for i, (workers, threads) in enumerate(args.runs):
            out = Path(tmp) / f"run{i}" / "embeddings.h5"
            out.parent.mkdir()
            seconds = run_workers(args.root, out, workers, threads, args.extract_args.split())
            first = first or out
            difference, images = max_difference(first, out)
            print(f"| {workers} x {threads} | {seconds:.0f} s | {images / seconds:.0f} | {difference:.1e} |", flush=True)


if __name__ == "__main__":
    main()
