#!/usr/bin/env python
"""Stage-2 speed of two checkouts side by side: this checkout's `model_speed.py`, run on each checkout's
`lymphocytosis` package alternately (A, B, A, B, ...), so both codes are measured by the same script under the
same machine load; the median of each row's wall and CPU time, and the ratios B / A.

    python benchmarks/model_speed_ab.py --old ../old-checkout --new . --embeddings artifacts/dlmi/embeddings.h5 \\
        --trials 30 --rounds 3

Each run is a fresh `nice`d process, so every row, the first CV's cell statistics included, is paid again.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROW = re.compile(r"^\| (.+?) +\| +([0-9.]+) s \| +([0-9.]+) s \|$")
SCRIPT = Path(__file__).resolve().parent / "model_speed.py"


def run(checkout: Path, embeddings: Path, trials: int, scratch: Path) -> dict[str, tuple[float, float]]:
    """model_speed.py imports the package beside its own folder: a scratch folder holding this script and a link
    to the checkout's package makes it measure that checkout."""
    if scratch.exists():
        shutil.rmtree(scratch)
    (scratch / "benchmarks").mkdir(parents=True)
    shutil.copy(SCRIPT, scratch / "benchmarks" / SCRIPT.name)
    (scratch / "lymphocytosis").symlink_to(checkout / "lymphocytosis", target_is_directory=True)
    command = ["nice", sys.executable, str(scratch / "benchmarks" / SCRIPT.name), "--embeddings", str(embeddings),
               "--trials", str(trials)]
    output = subprocess.run(command, cwd=checkout, capture_output=True, text=True, check=True).stdout
    print(output, flush=True)
    return {m[1]: (float(m[2]), float(m[3])) for m in map(ROW.match, output.splitlines()) if m}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="checkout A (the reference)")
    parser.add_argument("--new", type=Path, default=Path("."), help="checkout B")
    parser.add_argument("--embeddings", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, dict[str, list[tuple[float, float]]]] = {"old": {}, "new": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name in ("old", "new"):
                checkout = getattr(args, name).resolve()
                print(f"## round {round_ + 1}, {name} ({checkout})", flush=True)
                for label, seconds in run(checkout, args.embeddings.resolve(), args.trials, Path(tmp) / name).items():
                    times[name].setdefault(label, []).append(seconds)
    print(f"| {'step (median of ' + str(args.rounds) + ' runs each)':<58} | wall old | wall new | new/old "
          f"| CPU old | CPU new | new/old |")
    print(f"|{'-' * 60}|----------|----------|---------|---------|---------|---------|")
    for label, old in times["old"].items():
        new = times["new"].get(label)
        if new:
            wall = [statistics.median(t[0] for t in runs) for runs in (old, new)]
            cpu = [statistics.median(t[1] for t in runs) for runs in (old, new)]
            print(f"| {label:<58} | {wall[0]:6.2f} s | {wall[1]:6.2f} s | {wall[1] / wall[0]:7.2f} "
                  f"| {cpu[0]:5.2f} s | {cpu[1]:5.2f} s | {cpu[1] / cpu[0]:7.2f} |")


if __name__ == "__main__":
    main()
