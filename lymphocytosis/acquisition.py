"""Acquisition changes: what another laboratory's analyser, stain batch or scanner does to the same cell image.

Each change takes a whole image (the challenge's 224 x 224 RGB, the cell centred) and returns the image as the
other site would have exported it, before the tool's own crop. They are deterministic and torch-free (PIL,
numpy, scipy, scikit-image), so the same panel can be applied by a benchmark, a test or a user checking their
own images. The panel (`PANEL`) is a *test*: fixed, documented strengths, never used for training.

- JPEG quality 60 and 40: the analyser exports with stronger compression (8x8 block artefacts, chroma loss).
- stain intensity: the image is split by colour deconvolution (Ruifrok & Johnston's haematoxylin-eosin-DAB
  matrix, skimage.color.rgb2hed) and the haematoxylin and eosin optical densities are scaled, as a stronger or
  weaker staining bath would, then recombined (hed2rgb).
- white balance: per-channel gains applied in linear light (the sensor's raw values), warmer (more red, less
  blue) or cooler; a bright background clips at white as a real camera's would.
- exposure: one gain on all channels in linear light, darker or brighter.
- defocus: a Gaussian blur of sigma 1 or 2 px of the 224 px image.
- magnification: the image resampled about its centre by a zoom factor, still 224 x 224; zooming out (a lower
  magnification) has no pixels beyond the original border, so the margin is a mirror image of it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Change:
    """One acquisition change: a short name (file names, tables), what it is in words, how strong, and the kind
    of change it is (the benchmark's tables group changes by it)."""

    name: str
    description: str
    kind: str
    apply: Callable[[Image.Image], Image.Image]
    lossless_output: bool = True  # False for JPEG changes: the changed image *is* the compressed file

    def __call__(self, image: Image.Image) -> Image.Image:
        return self.apply(image.convert("RGB"))


def jpeg(image: Image.Image, quality: int, subsampling: int = -1) -> Image.Image:
    """Re-encoded as a baseline JPEG at `quality` (PIL's libjpeg; chroma subsampling -1: its default, 4:2:0; 0:
    4:4:4; 2: 4:2:0)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality), subsampling=int(subsampling))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def to_float(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64) / 255.0


def to_image(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.round(values * 255.0), 0, 255).astype(np.uint8), "RGB")


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(values: np.ndarray) -> np.ndarray:
    values = np.clip(values, 0.0, 1.0)
    return np.where(values <= 0.0031308, values * 12.92, 1.055 * values ** (1 / 2.4) - 0.055)


def stain_intensity(image: Image.Image, haematoxylin: float, eosin: float) -> Image.Image:
    """Haematoxylin and eosin optical densities scaled by the given factors (colour deconvolution)."""
    from skimage.color import hed2rgb, rgb2hed  # imported when used: extraction imports this module for its views

    hed = rgb2hed(to_float(image))
    hed[..., 0] *= haematoxylin
    hed[..., 1] *= eosin
    return to_image(hed2rgb(hed))


def channel_gains(image: Image.Image, gains: tuple[float, float, float]) -> Image.Image:
    """Per-channel gains in linear light (white balance; equal gains are an exposure change)."""
    linear = srgb_to_linear(to_float(image)) * np.asarray(gains, dtype=np.float64)
    return to_image(linear_to_srgb(linear))


def defocus(image: Image.Image, sigma: float) -> Image.Image:
    from scipy import ndimage

    blurred = ndimage.gaussian_filter(to_float(image), sigma=(sigma, sigma, 0), mode="reflect")
    return to_image(blurred)


def magnify(image: Image.Image, zoom: float) -> Image.Image:
    """Resampled about the centre by `zoom` (>1: closer, <1: farther; the margin then mirrors the image), PIL's
    bicubic (antialiased when shrinking, as an optical system of lower magnification would be), same size."""
    return resampled_about_centre(image, zoom, "symmetric", Image.Resampling.BICUBIC)


def resampled_about_centre(image: Image.Image, zoom: float, margin: str, resample: Image.Resampling) -> Image.Image:
    """`image` zoomed by `zoom` about its centre, same size; the margin a zoom below 1 shows is the image padded
    by numpy's `margin` mode."""
    width, height = image.size
    pad = int(np.ceil(max(width, height) * max(0.0, 1 / zoom - 1) / 2)) + 2
    padded = Image.fromarray(np.pad(np.asarray(image), ((pad, pad), (pad, pad), (0, 0)), mode=margin), "RGB")
    half_w, half_h = width / zoom / 2, height / zoom / 2
    centre_x, centre_y = pad + width / 2, pad + height / 2
    box = (centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h)
    return padded.resize((width, height), resample, box=box)


def _panel() -> dict[str, Change]:
    changes = [
        Change("jpeg60", "JPEG quality 60", "JPEG compression", lambda im: jpeg(im, 60), lossless_output=False),
        Change("jpeg40", "JPEG quality 40", "JPEG compression", lambda im: jpeg(im, 40), lossless_output=False),
        Change("stain_strong", "stronger haematoxylin (H x1.25, E x0.9)", "stain colour",
               lambda im: stain_intensity(im, 1.25, 0.9)),
        Change("stain_weak", "weaker haematoxylin (H x0.8, E x1.15)", "stain colour",
               lambda im: stain_intensity(im, 0.8, 1.15)),
        Change("wb_warm", "warmer white balance (R x1.10, B x0.85, linear light)", "white balance",
               lambda im: channel_gains(im, (1.10, 1.0, 0.85))),
        Change("wb_cool", "cooler white balance (R x0.88, B x1.08, linear light)", "white balance",
               lambda im: channel_gains(im, (0.88, 1.0, 1.08))),
        Change("darker", "12% darker exposure (linear light)", "exposure", lambda im: channel_gains(im, (0.88,) * 3)),
        Change("brighter", "12% brighter exposure (linear light)", "exposure",
               lambda im: channel_gains(im, (1.12,) * 3)),
        Change("blur1", "defocus, Gaussian sigma 1 px", "sharpness", lambda im: defocus(im, 1.0)),
        Change("blur2", "defocus, Gaussian sigma 2 px", "sharpness", lambda im: defocus(im, 2.0)),
        Change("mag_m10", "10% lower magnification", "cell size", lambda im: magnify(im, 0.9)),
        Change("mag_p10", "10% higher magnification", "cell size", lambda im: magnify(im, 1.1)),
        Change("mag_p25", "25% higher magnification", "cell size", lambda im: magnify(im, 1.25)),
    ]
    return {change.name: change for change in changes}


PANEL: dict[str, Change] = _panel()


def tone_curve(image: Image.Image, gamma: float) -> Image.Image:
    return to_image(to_float(image) ** gamma)


def sensor_noise(image: Image.Image, sd: float) -> Image.Image:
    """Gaussian noise of `sd` grey levels, drawn from a generator seeded by the image (the same noise each run)."""
    values = np.asarray(image, dtype=np.float64)
    rng = np.random.default_rng(int.from_bytes(values.tobytes()[:4096:7], "little") % 2**63)
    return to_image((values + rng.normal(0.0, sd, size=values.shape)) / 255.0)


def sharpened(image: Image.Image, sigma: float, amount: float) -> Image.Image:
    """A camera's sharpening: the image plus `amount` times its difference to a Gaussian blur of it."""
    from scipy import ndimage

    values = to_float(image)
    return to_image(values + amount * (values - ndimage.gaussian_filter(values, sigma=(sigma, sigma, 0), mode="reflect")))


def lower_resolution(image: Image.Image, scale: float) -> Image.Image:
    """A camera of fewer pixels: reduced to `scale` of the size (antialiased), enlarged back, bicubic."""
    small = (round(image.width * scale), round(image.height * scale))
    return image.resize(small, Image.Resampling.BICUBIC, reducing_gap=None).resize(image.size, Image.Resampling.BICUBIC)


# Changes beyond the panel, of kinds the panel has not (tone curve, noise, sharpening, resolution): a check that
# what the model learnt from its training views carries over to acquisition changes it was not measured on.
EXTRA: dict[str, Change] = {change.name: change for change in [
    Change("gamma", "camera tone curve (gamma 1.25 on the encoded values)", "tone", lambda im: tone_curve(im, 1.25)),
    Change("noise", "sensor noise (Gaussian, sd 5 grey levels)", "noise", lambda im: sensor_noise(im, 5.0)),
    Change("sharpen", "camera sharpening (unsharp mask, sigma 1.5 px, amount 1)", "sharpness",
           lambda im: sharpened(im, 1.5, 1.0)),
    Change("lowres", "lower camera resolution (60%, enlarged back)", "resolution", lambda im: lower_resolution(im, 0.6)),
]}
CHANGES: dict[str, Change] = {**PANEL, **EXTRA}


def save_changed(image: Image.Image, change: Change, stem_path) -> str:
    """Write `change(image)` beside `stem_path` (a path without suffix): `.jpg` holding the re-encoded file for
    JPEG changes (so the pixels read back are exactly the compressed ones), lossless `.png` otherwise. Returns
    the file name written."""
    if not change.lossless_output:
        quality = int(change.name.removeprefix("jpeg"))
        path = stem_path.with_suffix(".jpg")
        image.convert("RGB").save(path, format="JPEG", quality=quality)
        return path.name
    path = stem_path.with_suffix(".png")
    change(image).save(path, format="PNG", compress_level=1)
    return path.name
