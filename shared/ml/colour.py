"""Hand-made colour features: ImageNet backbones are trained to ignore colour, buyers are not."""

from __future__ import annotations

import numpy as np
from PIL import Image

THUMB = (6, 8)  # width, height: product photos are portrait (60x80 in fashion-small)
SMALL = (30, 40)  # width, height of the resize the histograms are taken on
BINS = 4  # per RGB channel -> 64-bin joint histograms
COLOUR_DIM = 2 * BINS**3 + 3 * THUMB[0] * THUMB[1] + 6
COLOUR_VERSION = "colour-v1"


def colour_features(img: Image.Image) -> np.ndarray:
    """Joint RGB histograms (whole image and foreground), a coarse thumbnail, foreground mean/std.

    The foreground is every pixel that differs from the border colour: catalogue photos sit on a
    plain background, and the product's own colour is what ``baseColour`` names.
    """
    rgb = img.convert("RGB")
    return colour_features_from(np.asarray(rgb.resize(SMALL, Image.BILINEAR)),
                                np.asarray(rgb.resize(THUMB, Image.BILINEAR)))


def colour_features_from(small_rgb: np.ndarray, thumb_rgb: np.ndarray) -> np.ndarray:
    """:func:`colour_features` from its two resizes, uint8 (height, width, 3) arrays of sizes
    :data:`SMALL` and :data:`THUMB`, however they were made (PIL here, the GPU decoder on a device)."""
    small = small_rgb.astype(np.float32) / 255
    pixels = small.reshape(-1, 3)
    border = np.concatenate([small[0], small[-1], small[:, 0], small[:, -1]])
    background = np.median(border, axis=0)
    fg_mask = np.abs(pixels - background).max(axis=1) > 0.12
    fg = pixels[fg_mask] if fg_mask.sum() >= 20 else pixels
    idx = np.minimum((pixels * BINS).astype(np.int64), BINS - 1)
    codes = idx[:, 0] * BINS * BINS + idx[:, 1] * BINS + idx[:, 2]
    hist_all = np.bincount(codes, minlength=BINS**3).astype(np.float32)
    fg_codes = codes[fg_mask] if fg_mask.sum() >= 20 else codes
    hist_fg = np.bincount(fg_codes, minlength=BINS**3).astype(np.float32)
    hist_all /= max(hist_all.sum(), 1.0)
    hist_fg /= max(hist_fg.sum(), 1.0)
    thumb = thumb_rgb.astype(np.float32) / 255
    stats = np.concatenate([fg.mean(axis=0), fg.std(axis=0)])
    feats = np.concatenate([np.sqrt(hist_all), np.sqrt(hist_fg), thumb.reshape(-1), stats])
    return feats.astype(np.float32)
