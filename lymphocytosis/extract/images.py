"""A patient's cell images as the tool reads them, whatever is done with them next (embedded or measured).

No torch here: the measurement sets (morphometry.py) read images the same way the embedder does.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .layout import list_cell_images

UNREADABLE = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombWarning,
              Image.DecompressionBombError)


@dataclass
class ReadImages:
    """What `transform` made of each readable image, in file-name order, and the files that could not be read."""

    outputs: list
    names: list[str]
    skipped: list[dict] = field(default_factory=list)  # {"file", "reason"}


def read_cell_images(folder: Path, transform: Callable[[Image.Image], object]) -> ReadImages:
    """Decode every cell image of a patient's folder and apply `transform`; an unreadable file (or one that
    `transform` refuses with ValueError) is reported, not raised. Decompression bombs count as unreadable."""
    result = ReadImages([], [])
    for path in list_cell_images(folder):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    image.load()
                    result.outputs.append(transform(image))
            result.names.append(path.name)
        except UNREADABLE as exc:
            result.skipped.append({"file": path.name, "reason": f"{type(exc).__name__}: {exc}"[:300]})
    return result


def canonical_image(image: Image.Image, size: int) -> Image.Image:
    """RGB (grayscale, RGBA, palette, CMYK converted) at `size` x `size` (other sizes resized, bicubic)."""
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return image
