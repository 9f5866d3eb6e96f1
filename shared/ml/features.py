"""Turn items into model inputs through the embedding cache: each (content, encoder) once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shared.ml.cache import EmbeddingCache, cached_encode
from shared.ml.dataset import content_hash
from shared.ml.progress import Progress, progress


def _bar(total: int, desc: str, show: bool) -> Progress:
    return progress(total, desc, show, unit="item")


def image_features(
    encoder, blobs: Sequence[bytes | None], cache: EmbeddingCache | None = None,
    show_progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) image features and an (n,) bool mask of items whose image decoded."""
    present = [i for i, b in enumerate(blobs) if b]
    out = np.zeros((len(blobs), encoder.dim), dtype=np.float32)
    if present:
        keys = [content_hash(blobs[i]) for i in present]
        with _bar(len(present), "encode images", show_progress) as bar:
            vecs = cached_encode(
                cache, encoder.encoder_id, keys,
                lambda idx: encoder.encode([blobs[present[i]] for i in idx])[0],
                encoder.dim, progress=bar.update,
            )
        out[present] = vecs
    # A decoded image always has non-zero colour features; a zero row means "no usable image".
    mask = np.abs(out).sum(axis=1) > 0
    return out, mask


def text_features(
    encoder, texts: Sequence[str], cache: EmbeddingCache | None = None, show_progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) text embeddings and an (n,) bool mask of items that have any text."""
    present = [i for i, t in enumerate(texts) if t and t.strip()]
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    if present:
        keys = [content_hash(texts[i].strip()) for i in present]
        with _bar(len(present), "encode texts", show_progress) as bar:
            vecs = cached_encode(
                cache, encoder.encoder_id, keys,
                lambda idx: encoder.encode([texts[present[i]] for i in idx]),
                encoder.dim, progress=bar.update,
            )
        out[present] = vecs
    mask = np.zeros(len(texts), dtype=bool)
    mask[present] = True
    return out, mask
