"""The lexical channel's input: a text's word-bounded character n-grams, hashed into buckets.

The same n-grams as the TF-IDF baseline (:mod:`shared.ml.baseline`, scikit-learn's ``char_wb``,
1-4 characters, lower-cased), but with no vocabulary to fit or store: each n-gram's bucket is a
stable hash of its UTF-8 bytes (``zlib.crc32``, the same in every process and on every machine;
Python's ``hash()`` is salted per process), so a model computes the ids of any text, in any
script, from the text alone. Bucket 0 is padding; real n-grams land in 1..buckets-1.

The head (:class:`shared.ml.head.FusionHead`) turns ids and counts into TF-IDF-like weights with
inverse document frequencies fitted on its own training items, and averages an embedding table.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Sequence

import numpy as np

NGRAMS = (1, 4)  # character n-gram lengths, as the baseline's ngram_range
MAX_NGRAMS = 1024  # distinct n-grams kept per text (the first seen); a long description is cut
_SPACE = re.compile(r"\s\s+")


def char_ngrams(text: str, ngrams: tuple[int, int] = NGRAMS) -> list[str]:
    """Word-bounded character n-grams, exactly as scikit-learn's ``analyzer="char_wb"`` (after
    NFKC normalisation and lower-casing): each word padded with one space on each side."""
    text = _SPACE.sub(" ", unicodedata.normalize("NFKC", text).lower())
    lo, hi = ngrams
    out: list[str] = []
    for word in text.split():
        w = f" {word} "
        for n in range(lo, hi + 1):
            offset = 0
            out.append(w[offset:offset + n])
            while offset + n < len(w):
                offset += 1
                out.append(w[offset:offset + n])
            if offset == 0:  # a word shorter than n counts once
                break
    return out


def bucket(gram: str, buckets: int) -> int:
    """The bucket of one n-gram: 1..buckets-1 (0 is padding), the same in every process."""
    return zlib.crc32(gram.encode("utf-8")) % (buckets - 1) + 1


def hash_ngrams(
    texts: Sequence[str], buckets: int, max_ngrams: int = MAX_NGRAMS,
) -> tuple[np.ndarray, np.ndarray]:
    """Per text, its distinct buckets and how often each occurs: ``(ids, counts)``, both
    ``(n, width)`` with width the most buckets of any text (at least 1); int64 ids, float32
    counts, zero-padded. An empty text has no ids (its row is all padding)."""
    if buckets < 2:
        raise ValueError(f"buckets must be at least 2, not {buckets}")
    memo: dict[str, int] = {}
    rows: list[Counter] = []
    for t in texts:
        c: Counter = Counter()
        for g in char_ngrams(t or ""):
            b = memo.get(g)
            if b is None:
                b = memo[g] = bucket(g, buckets)
            if b in c or len(c) < max_ngrams:
                c[b] += 1
        rows.append(c)
    width = max([len(c) for c in rows] + [1])
    ids = np.zeros((len(texts), width), dtype=np.int64)
    counts = np.zeros((len(texts), width), dtype=np.float32)
    for k, c in enumerate(rows):
        if c:
            ids[k, :len(c)] = list(c.keys())
            counts[k, :len(c)] = list(c.values())
    return ids, counts


def document_frequency(ids: np.ndarray, counts: np.ndarray, buckets: int) -> np.ndarray:
    """(buckets,) how many texts contain each bucket."""
    present = counts > 0
    return np.bincount(ids[present], minlength=buckets).astype(np.float64)
