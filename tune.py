#!/usr/bin/env python
"""Tune the bag features and LightGBM with Optuna; resumable, and judged by nested CV (see `--help`)."""

from lymphocytosis.cli.tune import main

if __name__ == "__main__":
    raise SystemExit(main())
