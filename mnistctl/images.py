"""A picture of a digit, of any size, to the 784 floats an MNIST model expects.

The steps are those of the MNIST preprocessing (LeCun et al.): light ink on a dark background, the
digit cropped to its ink, scaled to fit a 20x20 box keeping its aspect ratio (anti-aliased, hence grey
levels), then placed in the 28x28 field so that its centre of mass sits at the centre.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from serving.constants import IMAGE_SIDE, PIXELS

DIGIT_BOX = 20  # the digit's longer side after scaling, in pixels
INK_THRESHOLD = 0.2  # normalised intensity above which a pixel counts as ink when cropping


def read_image(path: Path | str) -> np.ndarray:
    """A PNG (or any format Pillow reads) -> float32 [784] in [0, 1]; `ValueError` if it is not a picture
    of something on a plain background."""
    try:
        with Image.open(path) as image:
            image.load()
            return image_to_mnist(image)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path}: not a readable image ({error})") from error


def image_to_mnist(image: Image.Image) -> np.ndarray:
    """Pillow image -> float32 [784] in [0, 1], MNIST-like: white digit on black, centred by mass."""
    grey = np.asarray(_flatten_alpha(image).convert("L"), dtype=np.float32) / 255.0
    ink = _ink(grey)
    rows, cols = np.nonzero(ink > INK_THRESHOLD)
    if rows.size == 0:
        raise ValueError("no digit found: the image is blank or has no contrast")
    cropped = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    digit = _fit(cropped, DIGIT_BOX)
    return _centre_by_mass(digit).reshape(PIXELS)


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Drop transparency: a transparent background becomes the colour opposite to the ink's."""
    if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
        return image
    rgba = image.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32)
    grey = np.asarray(rgba.convert("L"), dtype=np.float32)
    opaque = alpha > 127
    ink_is_dark = not opaque.any() or float(grey[opaque].mean()) < 128.0
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255) if ink_is_dark else (0, 0, 0, 255))
    return Image.alpha_composite(background, rgba)


def _ink(grey: np.ndarray) -> np.ndarray:
    """Grey levels -> ink intensity in [0, 1] with the background at 0, whatever the paper's colour."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = float(np.median(border))
    if background > 0.5:  # dark ink on light paper: invert, as MNIST digits are light on dark
        grey = 1.0 - grey
        background = 1.0 - background
    peak = float(grey.max())
    if peak - background < 0.1:
        return np.zeros_like(grey)
    return np.clip((grey - background) / (peak - background), 0.0, 1.0)


def _fit(ink: np.ndarray, box: int) -> np.ndarray:
    """Scale so that the longer side is `box` pixels, keeping the aspect ratio (anti-aliased)."""
    height, width = ink.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    picture = Image.fromarray(np.round(ink * 255.0).astype(np.uint8), mode="L")
    resized = picture.resize(size, Image.Resampling.LANCZOS)  # Pillow filters over the whole footprint
    return np.asarray(resized, dtype=np.float32) / 255.0


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Place `digit` in a 28x28 field with its centre of mass at the field's centre (kept inside)."""
    height, width = digit.shape
    mass = float(digit.sum())
    rows, cols = np.indices(digit.shape)
    centre_row = float((rows * digit).sum()) / mass
    centre_col = float((cols * digit).sum()) / mass
    # MNIST digits have their centre of mass at (14, 14) in 0-based pixel indices (measured on the test set).
    middle = IMAGE_SIDE / 2.0
    top = int(np.clip(round(middle - centre_row), 0, IMAGE_SIDE - height))
    left = int(np.clip(round(middle - centre_col), 0, IMAGE_SIDE - width))
    field = np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    field[top : top + height, left : left + width] = digit
    return field
