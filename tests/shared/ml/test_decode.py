"""The tensor (torchvision.io) decode path gives the PIL path's tensors, on the CPU here; what it
does not take falls back to PIL image by image, with PIL's errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shared.ml.dataset import load_manifest, load_records, read_images
from shared.ml.decode import Limits, TensorDecoder, decode_batch, tensor_candidate
from shared.ml.image_encoder import ImageEncoder

LIMITS = Limits(max_bytes=10_000_000, max_pixels=1_000_000)


@pytest.fixture(scope="module")
def photos(sample_manifest: Path) -> list[bytes]:
    m = load_manifest(sample_manifest)
    recs = load_records(m)[:24]
    found = read_images(m, [r.image_ref for r in recs])
    return [found[r.image_ref] for r in recs if r.image_ref in found]


@pytest.fixture(scope="module")
def pil_encoder() -> ImageEncoder:
    return ImageEncoder(device="cpu", batch_size=8, decode_threads=2, max_image_pixels=LIMITS.max_pixels,
                        gpu_decode=False)


@pytest.fixture(scope="module")
def tensor_encoder() -> ImageEncoder:
    return ImageEncoder(device="cpu", batch_size=8, decode_threads=2, max_image_pixels=LIMITS.max_pixels,
                        gpu_decode=True)


def _decoder(enc: ImageEncoder) -> TensorDecoder:
    p = enc.pre
    return TensorDecoder(torch.device("cpu"), p.resize, p.crop, p.mean, p.std, p.interpolation, LIMITS)


def _encoded(fmt: str, size: tuple[int, int] = (60, 80), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (30, 160, 90) if mode == "RGB" else 128 if mode == "L" else (10, 20, 30, 40)).save(
        buf, format=fmt)
    return buf.getvalue()


def test_same_tensors_and_colour_as_pil(photos: list[bytes], pil_encoder: ImageEncoder) -> None:
    assert len(photos) >= 20 and all(tensor_candidate(p, LIMITS) for p in photos)
    reference = pil_encoder.prepare_many(list(photos))
    got = _decoder(pil_encoder).decode_many(list(photos)).slots
    for ref, mine in zip(reference, got, strict=True):
        assert isinstance(ref, tuple) and mine is not None
        assert mine[0].shape == ref[0].shape == (3, 224, 224)
        torch.testing.assert_close(mine[0], ref[0], atol=1e-3, rtol=0)
        # PIL's BILINEAR shrink vs torch's antialiased bilinear: a thumbnail value may differ by one level.
        np.testing.assert_allclose(mine[1], ref[1], atol=0.02)
    colour_diff = np.mean([np.abs(m[1] - r[1]).mean() for m, r in zip(got, reference, strict=True)])
    assert colour_diff < 1e-3


def test_greyscale_jpeg_is_taken_and_matches(pil_encoder: ImageEncoder) -> None:
    grey = _encoded("JPEG", mode="L")
    assert tensor_candidate(grey, LIMITS)
    ref = pil_encoder.prepare_many([grey])[0]
    mine = _decoder(pil_encoder).decode_many([grey]).slots[0]
    assert isinstance(ref, tuple) and mine is not None
    torch.testing.assert_close(mine[0], ref[0], atol=1e-3, rtol=0)


def test_what_it_does_not_take_goes_to_pil(photos: list[bytes], pil_encoder: ImageEncoder) -> None:
    png, cmyk = _encoded("PNG"), _encoded("JPEG", mode="CMYK")
    truncated = photos[0][: len(photos[0]) // 2]
    big = _encoded("JPEG", size=(1200, 1000))  # 1.2 MP, over the 1 MP limit
    images: list[bytes | None] = [photos[0], png, None, cmyk, truncated, b"not an image", big, b"", photos[1]]
    assert [tensor_candidate(d, LIMITS) for d in images if d is not None] == [
        True, False, False, False, False, False, False, True]
    decoded = _decoder(pil_encoder).decode_many(images).slots
    assert [s is not None for s in decoded] == [True, False, False, False, False, False, False, False, True]
    mixed = decode_batch(images, _decoder(pil_encoder), pil_encoder.prepare_many)
    reference = pil_encoder.prepare_many(images)
    for ref, mine in zip(reference, mixed, strict=True):
        if isinstance(ref, tuple):
            assert isinstance(mine, tuple)
            torch.testing.assert_close(mine[0], ref[0], atol=1e-3, rtol=0)
        else:
            assert mine == ref  # None, or PIL's own reason (same words as before)
    assert "pixel limit" in str(mixed[6]) and "truncated" in str(mixed[4])


def test_one_undecodable_jpeg_does_not_fail_the_batch(photos: list[bytes], pil_encoder: ImageEncoder) -> None:
    # Right magic and end marker and a readable header, but broken scan data: the batched decode fails,
    # then image by image only this one does (and PIL then gives its reason).
    broken = photos[2][:400] + bytes(len(photos[2]) - 402) + b"\xff\xd9"
    decoded = _decoder(pil_encoder).decode_many([photos[0], broken, photos[1]]).slots
    assert decoded[0] is not None and decoded[2] is not None


def test_encoder_results_do_not_depend_on_the_decode_path(
    photos: list[bytes], pil_encoder: ImageEncoder, tensor_encoder: ImageEncoder,
) -> None:
    images: list[bytes | None] = [*photos[:10], None, _encoded("PNG"), b"junk", *photos[10:14]]
    a, errors_a = pil_encoder.encode(images)
    b, errors_b = tensor_encoder.encode(images)
    assert errors_a == errors_b
    assert errors_a[10] == "no image" and errors_a[11] is None and errors_a[12] is not None
    np.testing.assert_allclose(b, a, atol=0.02)
    backbone = pil_encoder.backbone_dim
    np.testing.assert_allclose(b[:, :backbone], a[:, :backbone], atol=1e-4)


def test_prepare_then_embed_is_encode(photos: list[bytes], pil_encoder: ImageEncoder) -> None:
    images: list[bytes | None] = [photos[0], None, b"junk", photos[1]]
    whole, errors = pil_encoder.encode(images)
    prepared = pil_encoder.prepare_batch(images)
    assert prepared.ok == [0, 3] and prepared.pixels is not None and prepared.pixels.shape[0] == 2
    split, split_errors = pil_encoder.embed(prepared)
    assert split_errors == errors
    np.testing.assert_allclose(split, whole, atol=1e-5)
    assert not split[1].any() and not split[2].any()
