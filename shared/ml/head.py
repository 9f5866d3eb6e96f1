"""The fusion head: two projected embeddings, fused per axis, one output per axis."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn


@dataclass
class HeadConfig:
    """Everything needed to rebuild the head's shape from the artifact manifest."""

    text_dim: int
    image_dim: int
    outputs: dict[str, int]  # axis -> number of values
    hidden: int = 512
    fusion: str = "gated"  # "gated" (per-axis modality gates) or "concat" (one shared MLP)
    dropout: float = 0.2
    axis_order: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


class _Proj(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Dropout(dropout / 2), nn.Linear(dim, hidden), nn.LayerNorm(hidden), nn.GELU(),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FusionHead(nn.Module):
    """Per-axis logits from (text, image) features and their availability masks.

    ``gated``: each axis learns, per item, how much to trust each modality (a softmax over the
    modalities present), then its own MLP reads the gated mix plus the product of the two — so
    colour can lean on the photo while articleType leans on the title.
    ``concat``: one MLP over [text, image, masks] shared by every axis (the baseline).
    """

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        # Feature standardisation, fitted on training data and saved with the head.
        self.register_buffer("image_mean", torch.zeros(cfg.image_dim))
        self.register_buffer("image_std", torch.ones(cfg.image_dim))
        self.text = _Proj(cfg.text_dim, h, cfg.dropout)
        self.image = _Proj(cfg.image_dim, h, cfg.dropout)
        self.axes = list(cfg.axis_order or cfg.outputs)
        if cfg.fusion == "gated":
            self.gates = nn.ModuleDict({a: nn.Linear(2 * h + 2, 2) for a in self.axes})
            # Per-axis MLPs are half width: at full width seven of them alone weigh 15 MB,
            # and the whole artifact must stay under 20 MB.
            self.mlps = nn.ModuleDict({
                a: nn.Sequential(nn.Linear(2 * h, h // 2), nn.GELU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(h // 2, cfg.outputs[a]))
                for a in self.axes
            })
        elif cfg.fusion == "concat":
            self.trunk = nn.Sequential(
                nn.Linear(2 * h + 2, h), nn.GELU(), nn.Dropout(cfg.dropout),
            )
            self.outs = nn.ModuleDict({a: nn.Linear(h, cfg.outputs[a]) for a in self.axes})
        else:
            raise ValueError(f"fusion must be 'gated' or 'concat', got {cfg.fusion!r}")

    def set_image_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.image_mean.copy_(mean)
        self.image_std.copy_(std.clamp(min=1e-3))

    def forward(
        self, text: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor,
        image_mask: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        mt = text_mask.float().unsqueeze(-1)
        mi = image_mask.float().unsqueeze(-1)
        t = self.text(text) * mt
        i = self.image((image - self.image_mean) / self.image_std) * mi
        masks = torch.cat([mt, mi], dim=-1)
        if self.cfg.fusion == "concat":
            z = self.trunk(torch.cat([t, i, masks], dim=-1))
            return {a: self.outs[a](z) for a in self.axes}
        out, _ = self._gated(t, i, masks)
        return out

    def _gated(self, t: torch.Tensor, i: torch.Tensor, masks: torch.Tensor,
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        both = torch.cat([t, i, masks], dim=-1)
        absent = (masks == 0) & (masks.sum(-1, keepdim=True) > 0)  # keep one slot if none present
        out, gates = {}, {}
        for a in self.axes:
            g = self.gates[a](both).masked_fill(absent, -1e4).softmax(-1)
            mix = g[:, :1] * t + g[:, 1:] * i
            out[a] = self.mlps[a](torch.cat([mix, t * i], dim=-1))
            gates[a] = g
        return out, gates

    def gate_weights(
        self, text: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor,
        image_mask: torch.Tensor,
    ) -> dict[str, torch.Tensor] | None:
        """Per axis, each item's (text, image) weights: the share each input had in the decision
        (a tag's evidence). None for the concat head, which has no gate to read."""
        if self.cfg.fusion != "gated":
            return None
        mt = text_mask.float().unsqueeze(-1)
        mi = image_mask.float().unsqueeze(-1)
        t = self.text(text) * mt
        i = self.image((image - self.image_mean) / self.image_std) * mi
        return self._gated(t, i, torch.cat([mt, mi], dim=-1))[1]
