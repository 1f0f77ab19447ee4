#!/usr/bin/env python
"""Stage-2 speed of two checkouts side by side: `model_speed.py` run alternately in each (A, B, A, B, ...),
so both see the same machine load; the median of each row and the ratio B / A.

    python benchmarks/model_speed_ab.py --old ../old-checkout --new . --embeddings artifacts/dlmi/embeddings.h5 \\
        --trials 30 --rounds 3

Each run is a fresh process (`nice`d), so every row, the first CV's cell statistics included, is paid again.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROW = re.compile(r"^\| (.+?) +\| +([0-9.]+) s \|$")


def run(checkout: Path, embeddings: Path, trials: int) -> dict[str, float]:
    command = ["nice", sys.executable, "benchmarks/model_speed.py", "--embeddings", str(embeddings), "--trials", str(trials)]
    output = subprocess.run(command, cwd=checkout, capture_output=True, text=True, check=True).stdout
    print(output, flush=True)
    return {match[1]: float(match[2]) for match in map(ROW.match, output.splitlines()) if match}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="checkout A (the reference)")
    parser.add_argument("--new", type=Path, default=Path("."), help="checkout B")
    parser.add_argument("--embeddings", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    embeddings = args.embeddings.resolve()
    times: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    for round_ in range(args.rounds):
        for name in ("old", "new"):
            print(f"## round {round_ + 1}, {name} ({getattr(args, name)})", flush=True)
            for label, seconds in run(getattr(args, name).resolve(), embeddings, args.trials).items():
                times[name].setdefault(label, []).append(seconds)
    print(f"| {'step (median of ' + str(args.rounds) + ' runs each)':<58} |      old |      new | new/old |")
    print(f"|{'-' * 60}|----------|----------|---------|")
    for label, old in times["old"].items():
        new = times["new"].get(label)
        if new:
            a, b = statistics.median(old), statistics.median(new)
            print(f"| {label:<58} | {a:6.2f} s | {b:6.2f} s | {b / a:7.2f} |")


if __name__ == "__main__":
    main()
