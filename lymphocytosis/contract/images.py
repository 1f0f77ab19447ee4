"""Cell images on disk: which files a patient has, whether they may be read, and how each becomes 8-bit RGB.

A patient's folder is scanned once: candidate image files in name order, each checked to have a name the
embeddings file can record (UTF-8, no backslash or control character); symbolic links the user placed in the
dataset are followed unless refused (`--refuse-links`); a fingerprint of the listing (each image's name and the
SHA-256 of its bytes, through any link) lets a rerun find exactly the patients whose images changed, wherever the
dataset was copied or moved (a copy has new modification times, not new images). Decoding converts every mode PIL
opens to 8-bit RGB the way a
viewer would show it: 16-bit and float grey levels are rescaled (not clipped to white), transparency is laid
on white, CMYK and palettes are converted; tiny or blank (single-colour) images carry no cell and are
skipped with their reason.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .layout import list_cell_images

MIN_SIDE = 32  # pixels; smaller images cannot hold a recognisable lymphocyte


class UnusableImage(Exception):
    """An image file that decodes but holds no usable cell picture; the message says why."""


@dataclass(frozen=True)
class FolderScan:
    images: list[Path]  # readable candidates, in name order
    skipped: list[dict] = field(default_factory=list)  # {"file", "reason"}: refused before decoding
    fingerprint: str = hashlib.sha256(b"").hexdigest()  # of every candidate's name and content
    note: str = ""  # why the patient has no images at all, if so
    legacy_fingerprint: str = hashlib.sha256(b"").hexdigest()  # names, sizes, modification times: earlier versions'


def content_digest(path: Path) -> str:
    """SHA-256 of a file's bytes; an unreadable file is named so (decoding then records why it is skipped)."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        return f"unreadable ({exc.strerror})"


def inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return False


def display_name(path: Path) -> str:
    """The file name as stored: itself when valid UTF-8, else its escaped form (never written to HDF5 raw)."""
    try:
        path.name.encode("utf-8")
        return path.name
    except UnicodeEncodeError:
        return os.fsencode(path.name).decode("utf-8", "backslashreplace")


LINKS_REFUSED = "symbolic link, refused (--refuse-links)"


def unrecordable(name: str) -> str | None:
    """Why an image name cannot be stored in the embeddings file and read back as a plain name, if so."""
    if "\\" in name:
        return "file name holds a backslash; rename it"
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        return "file name holds a control character; rename it"
    return None


def scan_folder(folder: Path, root: Path, follow_links: bool = True) -> FolderScan:
    """A patient's candidate images, with what must be skipped and the listing's fingerprint.

    Symbolic links the user placed in the dataset (a patient folder, an image) are followed by default, a usual
    way to assemble a cohort from an archive; the content they lead to enters the fingerprint, so relinking to
    other images re-embeds the patient. With `follow_links=False` they are skipped and recorded."""
    if not folder.is_dir():
        return FolderScan([], note="folder missing")
    if folder.is_symlink() and not follow_links:
        return FolderScan([], note=f"folder is a {LINKS_REFUSED}")
    images, skipped, digest, legacy = [], [], hashlib.sha256(), hashlib.sha256()
    for path in list_cell_images(folder):
        name = display_name(path)
        try:
            stat = path.stat()
        except OSError as exc:
            skipped.append({"file": name, "reason": f"cannot stat ({exc.strerror})"})
            continue
        legacy.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        content = f"size {stat.st_size}"
        if name != path.name:
            skipped.append({"file": name, "reason": "file name is not valid UTF-8; rename it"})
        elif unrecordable(name):
            skipped.append({"file": name.encode("unicode_escape").decode("ascii"), "reason": unrecordable(name)})
        elif path.is_symlink() and not follow_links:
            skipped.append({"file": name, "reason": LINKS_REFUSED})
        else:
            images.append(path)
            content = content_digest(path)
        digest.update(f"{name}\0{content}\n".encode())
    note = "" if images or skipped else "no images"
    return FolderScan(images, skipped, digest.hexdigest(), note, legacy.hexdigest())


def grey_levels_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer or float grey levels, rescaled to 8 bits by their type's range."""
    values = np.asarray(image, dtype=np.float64)
    if not np.isfinite(values).all():
        raise UnusableImage(f"{image.mode} image with non-finite pixel values")
    low, high = float(values.min()), float(values.max())
    if low < 0:
        raise UnusableImage(f"{image.mode} image with negative pixel values")
    if image.mode == "F" and high <= 1.0:
        scale = 1.0
    elif image.mode == "F" and high <= 255:
        scale = 255.0
    elif high <= 65535 and (image.mode.startswith("I;16") or high > 255):
        scale = 65535.0
    elif high <= 255:
        scale = 255.0
    else:
        raise UnusableImage(f"{image.mode} image with values up to {high:g}, beyond 16 bits")
    grey = np.clip(np.round(values / scale * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def to_rgb8(image: Image.Image) -> Image.Image:
    if image.mode in {"I", "F"} or image.mode.startswith("I;16"):
        return grey_levels_to_rgb(image)
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def canonical_image(image: Image.Image, size: int) -> Image.Image:
    """RGB at `size` x `size` (other sizes resized, bicubic): the frame both the network and the measurements see."""
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return image


def load_rgb(path: Path) -> Image.Image:
    """The image at `path` as 8-bit RGB, upright; `UnusableImage` (or PIL's errors) when it holds no cell."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            image.load()
            rgb = to_rgb8(ImageOps.exif_transpose(image))
    if min(rgb.size) < MIN_SIDE:
        raise UnusableImage(f"too small ({rgb.size[0]}x{rgb.size[1]} px; at least {MIN_SIDE} px needed)")
    if all(low == high for low, high in rgb.getextrema()):
        raise UnusableImage("blank image (every pixel has the same colour)")
    return rgb


DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, UnusableImage, Image.DecompressionBombWarning,
                 Image.DecompressionBombError)


def decode_failure(path: Path, exc: Exception) -> dict:
    """How a skipped image is recorded: its name and why (kept short: it is stored per image)."""
    reason = str(exc) if isinstance(exc, UnusableImage) else f"{type(exc).__name__}: {exc}"
    return {"file": display_name(path), "reason": reason[:300]}
