#!/usr/bin/env python
"""Look at the segmentation: a PNG grid of random cells of both classes with the nucleus (yellow) and cell
(green) outlines drawn, reactive patients' cells first (blue bar), then tumoral ones (red bar); each tile is the
central 150 px of the 224 px image, enlarged twice.

    python benchmarks/segmentation_grid.py --root /data/dlmi --out grid.png [--cells 15] [--seed 0]
        [--stain slide]

Open the PNG and check the outlines: that is how the segmentation's constants were set (lymphocytosis/extract/
segmentation.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lymphocytosis.contract.images import canonical_image
from lymphocytosis.contract.layout import list_cell_images
from lymphocytosis.defaults import Stain, choice_values
from lymphocytosis.extract.preprocessing import CHALLENGE_IMAGE_SIZE
from lymphocytosis.extract.segmentation import segment
from lymphocytosis.extract.stain import normalise_array
from lymphocytosis.model.clinical import read_clinical

PER_ROW, CROP, ZOOM = 5, 150, 2
OUTLINES = (("cell", (0, 255, 0)), ("nucleus", (255, 255, 0)))
CLASS_BAR = {0: (0, 0, 255), 1: (255, 0, 0)}


def tile(path: Path, label: int, stain: str) -> np.ndarray:
    with Image.open(path) as image:
        rgb = normalise_array(np.asarray(canonical_image(image, CHALLENGE_IMAGE_SIZE)), stain)
    seg = segment(rgb)
    out = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    for name, colour in OUTLINES:
        mask = getattr(seg, name)
        out[ndi.binary_dilation(find_boundaries(mask, mode="inner")) & mask] = colour
    margin = (CHALLENGE_IMAGE_SIZE - CROP) // 2
    out = np.asarray(Image.fromarray(out[margin:margin + CROP, margin:margin + CROP]).resize(
        (CROP * ZOOM, CROP * ZOOM), Image.Resampling.NEAREST)).copy()
    out[:6] = CLASS_BAR[label]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cells", type=int, default=15, help="cells per class (default: 15)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stain", choices=choice_values(Stain), default="none")
    args = parser.parse_args()
    clinical = read_clinical(args.root)
    rng = np.random.default_rng(args.seed)
    tiles = []
    for label in (0, 1):
        files = [(path, label) for patient_id in clinical.index[clinical["label"] == label]
                 for path in list_cell_images(args.root / str(clinical.loc[patient_id, "split"]) / patient_id)]
        for k in rng.choice(len(files), min(args.cells, len(files)), replace=False):
            tiles.append(tile(*files[k], args.stain))
    while len(tiles) % PER_ROW:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i:i + PER_ROW]) for i in range(0, len(tiles), PER_ROW)]
    Image.fromarray(np.vstack(rows)).save(args.out)
    print(f"{args.out}: {len(tiles)} tiles")


if __name__ == "__main__":
    main()
