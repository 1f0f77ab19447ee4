#!/usr/bin/env python
"""The reference colours of `extract.py --stain` (lymphocytosis/extract/stain.py), measured on a dataset:
medians over every image of the background colour, of the red cells' colour (image border band), and of the
CIELAB mean and standard deviation of the whole image.

    python benchmarks/stain_references.py --root /data/dlmi [--every 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.color import rgb2lab

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lymphocytosis.contract.images import canonical_image
from lymphocytosis.contract.layout import discover_patients, list_cell_images
from lymphocytosis.extract.preprocessing import CHALLENGE_IMAGE_SIZE
from lymphocytosis.extract.stain import slide_references


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="dataset in the challenge layout")
    parser.add_argument("--every", type=int, default=1, help="use every N-th image (default: all)")
    args = parser.parse_args()
    files = [f for p in discover_patients(args.root) for f in list_cell_images(p.folder)][::args.every]
    whites, reds, means, stds = [], [], [], []
    for path in files:
        with Image.open(path) as image:
            rgb = np.asarray(canonical_image(image, CHALLENGE_IMAGE_SIZE), dtype=np.float64)
        references = slide_references(rgb)
        if references is not None:
            whites.append(references[0])
            reds.append(references[1])
        lab = rgb2lab(rgb / 255.0).reshape(-1, 3)
        means.append(lab.mean(0))
        stds.append(lab.std(0))
    print(f"{len(files)} images of {args.root} ({len(whites)} with background and red cells); medians:")
    for name, values in (("REFERENCE_WHITE", whites), ("REFERENCE_RED_CELL", reds), ("REFERENCE_LAB_MEAN", means),
                         ("REFERENCE_LAB_STD", stds)):
        print(f"{name} = np.array([{', '.join(f'{v:.1f}' for v in np.median(values, axis=0))}])")


if __name__ == "__main__":
    main()
