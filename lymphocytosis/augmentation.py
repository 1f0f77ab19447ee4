"""Training views: each cell image as another acquisition might have made it, at a random strength.

The cell score learns to give a cell the same score in its original and in its augmented view (cell_score.py:
the invariance penalty), so that the acquisition differences between laboratories -- compression, stain batch,
camera colour, exposure, focus, magnification -- stop moving the patients' probabilities.

These are *training* augmentations, drawn at random strengths, in a chain of their own (not the fixed changes
of acquisition.py, which stay a test that nothing is trained on): a view applies each step with probability
one half, in the order a real acquisition would (specimen, optics, sensor, file):

- magnification: zoom by a factor drawn from 0.85-1.30 about the centre (bilinear; the margin a lower
  magnification shows is the image mirrored);
- stain: haematoxylin and eosin optical densities (colour deconvolution) each scaled by a factor from 0.7-1.35
  and shifted by up to +-0.03, as in Tellez et al. (2018)'s HED jitter;
- colour: per-channel gains of the encoded (sRGB) values from 0.88-1.12, times one brightness gain from
  0.85-1.15;
- focus: a Gaussian blur of radius 0.3-2.5 px (PIL);
- file: JPEG at a quality drawn from 20-90 (4:2:0 or 4:4:4 chroma subsampling, at random).

Each image's draw is seeded by its pixels and the view's seed, so a view does not depend on the order, the
process or the machine that makes it: a resumed or shared extraction makes the same views.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
from PIL import Image, ImageFilter

from .acquisition import jpeg, resampled_about_centre, to_float, to_image

VERSION = 1
STEP_PROBABILITY = 0.5
ZOOM = (0.85, 1.30)
STAIN_SCALE = (0.7, 1.35)
STAIN_SHIFT = 0.03
CHANNEL_GAIN = (0.88, 1.12)
BRIGHTNESS = (0.85, 1.15)
BLUR_RADIUS = (0.3, 2.5)
JPEG_QUALITY = (20, 90)


def recipe(seed: int) -> str:
    """What made the views, as recorded in the views file's provenance: two files with different recipes differ."""
    return json.dumps({"version": VERSION, "seed": int(seed), "step_probability": STEP_PROBABILITY, "zoom": ZOOM,
                       "stain_scale": STAIN_SCALE, "stain_shift": STAIN_SHIFT, "channel_gain": CHANNEL_GAIN,
                       "brightness": BRIGHTNESS, "blur_radius": BLUR_RADIUS, "jpeg_quality": JPEG_QUALITY},
                      sort_keys=True)


def generator_for(image: Image.Image, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(image.tobytes()).digest()[:8]
    return np.random.default_rng([int(seed), int.from_bytes(digest, "little")])


def zoom(image: Image.Image, factor: float) -> Image.Image:
    return resampled_about_centre(image, factor, "reflect", Image.Resampling.BILINEAR)


def stain_jitter(image: Image.Image, scales: np.ndarray, shifts: np.ndarray) -> Image.Image:
    from skimage.color import hed2rgb, rgb2hed  # imported when first used: an extraction without views does not

    hed = rgb2hed(to_float(image))
    hed[..., :2] = hed[..., :2] * scales + shifts
    return to_image(hed2rgb(hed))


def colour(image: Image.Image, gains: np.ndarray) -> Image.Image:
    return to_image(to_float(image) * gains)


def random_view(image: Image.Image, seed: int) -> Image.Image:
    """One training view of `image` (see the module's docstring); every random number is drawn whether or not
    its step applies, so each step's strength depends on the image and the seed only."""
    rng = generator_for(image, seed)
    applies = rng.random(5) < STEP_PROBABILITY
    factor = rng.uniform(*ZOOM)
    scales, shifts = rng.uniform(*STAIN_SCALE, size=2), rng.uniform(-STAIN_SHIFT, STAIN_SHIFT, size=2)
    gains = rng.uniform(*CHANNEL_GAIN, size=3) * rng.uniform(*BRIGHTNESS)
    radius = rng.uniform(*BLUR_RADIUS)
    quality, subsampling = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)), int(rng.choice([0, 2]))
    view = image.convert("RGB")
    if applies[0]:
        view = zoom(view, factor)
    if applies[1]:
        view = stain_jitter(view, scales, shifts)
    if applies[2]:
        view = colour(view, gains)
    if applies[3]:
        view = view.filter(ImageFilter.GaussianBlur(radius))
    if applies[4]:
        view = jpeg(view, quality, subsampling)
    return view
