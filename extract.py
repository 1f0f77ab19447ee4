#!/usr/bin/env python
"""Stage 1: embed every cell image with a frozen pretrained CNN into one HDF5 file (see `--help`)."""

from lymphocytosis.cli.extract import main

if __name__ == "__main__":
    raise SystemExit(main())
