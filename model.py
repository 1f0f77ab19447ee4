#!/usr/bin/env python
"""Stage 2: bag statistics + clinical attributes -> LightGBM; honest CV, fit, predict, report (see `--help`)."""

from lymphocytosis.cli.model import main

if __name__ == "__main__":
    raise SystemExit(main())
