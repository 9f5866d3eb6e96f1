"""Batched JPEG decode + preprocessing with torchvision.io, for the GPU (nvJPEG) or the CPU.

Why: on a GPU worker, decoding and resizing photos with PIL on a few CPU threads is slower than the
backbone itself (published figures: ~8,000 images/s for nvJPEG against ~6,000 for EfficientNet-B0).
:class:`TensorDecoder` decodes a batch of JPEGs with ``torchvision.io.decode_jpeg`` on the model's
device and applies exactly the transform :class:`~shared.ml.image_encoder.ImageEncoder` applies to
PIL images (resize, centre crop, scale, normalise), so the model sees the same tensors within float
tolerance. The colour features are computed from the same small resizes PIL makes, done on the
device as well (only a 30x40 and a 6x8 thumbnail per image travel back to the host, for
:func:`shared.ml.colour.colour_features_from`).

Anything it does not take (not a JPEG, CMYK, a file nvJPEG refuses, corrupt data) is left to the
caller's PIL path, image by image; the same byte and pixel limits are checked first, from the header.
It runs on the CPU too (torchvision's libjpeg-turbo), which is how it is tested without a GPU.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

from shared.ml.colour import SMALL, THUMB, colour_features_from

JPEG_MAGIC = b"\xff\xd8\xff"
#: JPEG modes the tensor path decodes to RGB the way PIL's ``convert("RGB")`` does (CMYK and
#: others: PIL, whose conversion is the reference).
_TENSOR_MODES = frozenset({"RGB", "L"})
_INTERP = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}


@dataclass(frozen=True)
class Limits:
    """Byte and pixel limits, as the PIL path enforces them."""

    max_bytes: int
    max_pixels: int


def tensor_candidate(data: bytes, limits: Limits) -> bool:
    """Whether ``data`` is a JPEG the tensor path may decode: the right magic and end marker, a header
    PIL can read, an RGB or greyscale mode, within the limits. Reads the header only (no pixels are
    decoded); a False sends the item to the PIL path, which gives the error message if there is one."""
    if not data.startswith(JPEG_MAGIC) or len(data) > limits.max_bytes:
        return False
    if not data.rstrip(b"\0").endswith(b"\xff\xd9"):  # no end marker: truncated? PIL decides (and says)
        return False
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            return img.format == "JPEG" and img.mode in _TENSOR_MODES and 0 < w * h <= limits.max_pixels
    except Exception:  # noqa: BLE001  (any header PIL refuses: the PIL path says why)
        return False


def _uint8_resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a uint8 (3, H, W) image to exactly ``size`` (height, width), bilinear with antialiasing
    (what PIL's BILINEAR does when shrinking), rounded back to uint8 as PIL does."""
    return F.resize(img, list(size), interpolation=T.InterpolationMode.BILINEAR, antialias=True)


@dataclass
class Decoded:
    """Per input slot: (pixels on the device, colour features) or None (left to the PIL path)."""

    slots: list[tuple[torch.Tensor, np.ndarray] | None]


class TensorDecoder:
    """Decodes batches of JPEG bytes on ``device`` into the backbone's input tensors."""

    def __init__(self, device: torch.device, resize: int, crop: int, mean: tuple[float, float, float],
                 std: tuple[float, float, float], interpolation: str, limits: Limits) -> None:
        self.device = device
        self.limits = limits
        self.resize = resize
        self.crop = crop
        self.mode = _INTERP[interpolation]
        self._tail = T.Compose([T.CenterCrop(crop), T.ToDtype(torch.float32, scale=True),
                                T.Normalize(mean, std)])

    def _decode(self, datas: list[bytes]) -> list[torch.Tensor | None]:
        """uint8 (3, H, W) images on the device; None where this one would not decode. One batched
        call first (nvJPEG batches on CUDA); if it fails, image by image, so one bad file costs only
        itself. Host buffers are pinned for the copy to a GPU."""
        pin = self.device.type == "cuda"
        raw = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
        if pin:
            raw = [r.pin_memory() for r in raw]
        try:
            out = decode_jpeg(raw, mode=ImageReadMode.RGB, device=self.device)
            return list(out)
        except (RuntimeError, ValueError):
            pass
        one: list[torch.Tensor | None] = []
        for r in raw:
            try:
                one.append(decode_jpeg(r, mode=ImageReadMode.RGB, device=self.device))
            except (RuntimeError, ValueError):
                one.append(None)
        return one

    @torch.inference_mode()
    def decode_many(self, images: list[bytes | None]) -> Decoded:
        """Decode the JPEG slots of ``images``; every other slot (None, not a JPEG, refused) is None."""
        slots: list[tuple[torch.Tensor, np.ndarray] | None] = [None] * len(images)
        picked = [i for i, d in enumerate(images) if d is not None and tensor_candidate(d, self.limits)]
        if not picked:
            return Decoded(slots)
        decoded = self._decode([images[i] for i in picked])  # type: ignore[misc]
        # A decoder that ignored the RGB request (never seen): that image goes to the PIL path.
        ok = [(i, img) for i, img in zip(picked, decoded, strict=True)
              if img is not None and img.shape[0] == 3]
        if not ok:
            return Decoded(slots)
        pixels, smalls, thumbs = [], [], []
        for _, img in ok:
            pixels.append(self._tail(F.resize(img, [self.resize], interpolation=self.mode, antialias=True)))
            smalls.append(_uint8_resize(img, (SMALL[1], SMALL[0])))
            thumbs.append(_uint8_resize(img, (THUMB[1], THUMB[0])))
        # Two small copies back to the host for the colour features, not one per image.
        small_host = torch.stack(smalls).permute(0, 2, 3, 1).cpu().numpy()
        thumb_host = torch.stack(thumbs).permute(0, 2, 3, 1).cpu().numpy()
        for k, (i, _) in enumerate(ok):
            slots[i] = (pixels[k], colour_features_from(small_host[k], thumb_host[k]))
        return Decoded(slots)


def decode_batch(
    images: list[bytes | None], decoder: TensorDecoder | None,
    pil_prepare: Callable[[list[bytes | None]], list[tuple[torch.Tensor, np.ndarray] | str | None]],
) -> list[tuple[torch.Tensor, np.ndarray] | str | None]:
    """Each slot as :meth:`ImageEncoder.prepare_many` gives it: (pixels, colour), an error reason, or
    None for no image. The tensor decoder takes the JPEGs it can; PIL the rest, image by image."""
    if decoder is None:
        return pil_prepare(images)
    got = decoder.decode_many(images).slots
    rest = [images[i] if got[i] is None else None for i in range(len(images))]
    fallback = pil_prepare(rest) if any(r is not None for r in rest) else [None] * len(images)
    return [g if g is not None else f for g, f in zip(got, fallback, strict=True)]
