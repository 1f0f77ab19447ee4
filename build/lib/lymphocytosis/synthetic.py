"""A small synthetic dataset in the challenge layout, so the whole pipeline runs anywhere without patient data.

Each "cell" is a 224x224 JPEG of a stained nucleus on a pale background. Tumoral patients' nuclei are
smaller, rounder and darker, reactive ones larger and paler with more cytoplasm, with much overlap between
cells, so images carry signal but not all of it; clinical attributes carry some too (tumoral patients are
older with higher lymphocyte counts). The CSVs reproduce the real files' quirks: DOB as M/D/YYYY and as
DD-MM-YYYY, and a lowercase gender. Deterministic in `seed`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

log = logging.getLogger(__name__)

def draw_cell(rng: np.random.Generator, tumoral: bool, size: int = 224) -> Image.Image:
    background = np.array([232, 214, 222]) + rng.normal(0, 6, 3)
    image = Image.new("RGB", (size, size), tuple(int(v) for v in background))
    draw = ImageDraw.Draw(image)
    centre = size / 2 + rng.normal(0, 4, 2)
    cytoplasm = (rng.normal(58, 8) if tumoral else rng.normal(78, 10))
    nucleus = cytoplasm * (rng.normal(0.85, 0.05) if tumoral else rng.normal(0.65, 0.07))
    elongation = 1 + abs(rng.normal(0, 0.05 if tumoral else 0.15))
    tint = rng.normal(0, 8, 3)
    nucleus_colour = np.array([80, 40, 120]) if tumoral else np.array([120, 80, 160])
    for radius, colour in ((cytoplasm, np.array([190, 170, 215]) + tint), (nucleus, nucleus_colour + tint)):
        rx, ry = radius * elongation, radius / elongation
        draw.ellipse([centre[0] - rx, centre[1] - ry, centre[0] + rx, centre[1] + ry],
                     fill=tuple(int(np.clip(c, 0, 255)) for c in colour))
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float64)
    pixels += rng.normal(0, 5, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _dob_text(rng: np.random.Generator, age: float, row: int) -> str:
    year = int(2020 - age)
    month, day = int(rng.integers(1, 13)), int(rng.integers(1, 29))
    return f"{day:02d}-{month:02d}-{year}" if row % 4 == 3 else f"{month}/{day}/{year}"


def make_synthetic_dataset(root: Path, n_train: int = 40, n_test: int = 8, cells: tuple[int, int] = (8, 20),
                           seed: int = 0) -> Path:
    """Write a challenge-layout dataset under `root` (created) and return `root`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    splits = (("trainset", "trainset_true.csv", n_train, 0), ("testset", "testset_data.csv", n_test, 1000))
    for split, csv_name, count, offset in splits:
        lines = ["ID,LABEL,GENDER,DOB,LYMPH_COUNT"]
        for i in range(count):
            patient_id = f"S{offset + i}"
            tumoral = bool(i % 3 != 2)  # about 2/3 tumoral, as in the challenge
            age = float(np.clip(rng.normal(75 if tumoral else 60, 12), 20, 99))
            lymph = float(np.exp(rng.normal(2.6 if tumoral else 1.6, 0.8)))
            gender = "MF"[int(rng.integers(2))]
            if i == 5:
                gender = gender.lower()
            label = int(tumoral) if split == "trainset" else -1
            lines.append(f"{patient_id},{label},{gender},{_dob_text(rng, age, i)},{lymph:.2f}")
            folder = root / split / patient_id
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(int(rng.integers(cells[0], cells[1] + 1))):
                draw_cell(rng, tumoral if rng.random() < 0.8 else not tumoral).save(folder / f"{k:06d}.jpg", quality=90)
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / split / csv_name).write_text("\n".join(lines) + "\n")
    (root / "README.md").write_text(
        "SYNTHETIC data made by lymphocytosis.synthetic (not patient data): drawn cells and made-up clinical values.\n"
    )
    log.info("wrote a SYNTHETIC dataset (%d train, %d test patients) to %s", n_train, n_test, root)
    return root


if __name__ == "__main__":
    import argparse

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description="write a small SYNTHETIC dataset in the challenge layout")
    parser.add_argument("root", type=Path)
    parser.add_argument("--train", type=int, default=40)
    parser.add_argument("--test", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    make_synthetic_dataset(args.root, args.train, args.test, seed=args.seed)
