"""The fusion head: projected inputs (title embedding, photo, and optionally the title's hashed
character n-grams: the lexical channel), fused per axis, one output per axis."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

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
    # The lexical channel (shared.ml.lexical): hashed character n-grams of the title, an
    # EmbeddingBag of this many buckets x lexical_dim. 0: off (every model trained before it).
    lexical_buckets: int = 0
    lexical_dim: int = 32
    # Heads of this shape trained with different seeds, their logits averaged (HeadEnsemble);
    # 1: one head (every model trained before it).
    members: int = 1

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


LEXICAL_TABLES = ("lexical_bag.weight", "lexical_idf")  # stored float16 (shared.ml.artifact)


class FusionHead(nn.Module):
    """Per-axis logits from (text, image) features and their availability masks, and, with the
    lexical channel, the title's hashed n-grams (ids and counts; an item whose n-grams are all
    unknown, or that has none, has no lexical input).

    ``gated``: each axis learns, per item, how much to trust each modality (a softmax over the
    modalities present), then its own MLP reads the gated mix plus the product of title and photo
    — so colour can lean on the photo while articleType leans on the title.
    ``concat``: one MLP over [text, image, (lexical,) masks] shared by every axis (the baseline).
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
        self.lexical_on = cfg.lexical_buckets > 0
        views = 2
        if self.lexical_on:
            views = 3
            # Inverse document frequency per bucket, fitted on the training items (0: never seen,
            # so an unseen n-gram adds nothing), and the bucket embeddings, summed with TF-IDF
            # weights (L2-normalised per item, as the baseline's vectoriser).
            self.register_buffer("lexical_idf", torch.zeros(cfg.lexical_buckets))
            self.lexical_bag = nn.EmbeddingBag(cfg.lexical_buckets, cfg.lexical_dim, mode="sum")
            nn.init.normal_(self.lexical_bag.weight, std=0.1)
            self.lexical = _Proj(cfg.lexical_dim, h, cfg.dropout)
        self.axes = list(cfg.axis_order or cfg.outputs)
        if cfg.fusion == "gated":
            self.gates = nn.ModuleDict({a: nn.Linear(views * h + views, views) for a in self.axes})
            # Per-axis MLPs are half width: at full width seven of them alone weigh 15 MB,
            # and the whole artifact must stay under 20 MB.
            self.mlps = nn.ModuleDict({
                a: nn.Sequential(nn.Linear(2 * h, h // 2), nn.GELU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(h // 2, cfg.outputs[a]))
                for a in self.axes
            })
        elif cfg.fusion == "concat":
            self.trunk = nn.Sequential(
                nn.Linear(views * h + views, h), nn.GELU(), nn.Dropout(cfg.dropout),
            )
            self.outs = nn.ModuleDict({a: nn.Linear(h, cfg.outputs[a]) for a in self.axes})
        else:
            raise ValueError(f"fusion must be 'gated' or 'concat', got {cfg.fusion!r}")

    def set_image_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.image_mean.copy_(mean)
        self.image_std.copy_(std.clamp(min=1e-3))

    def set_lexical_idf(self, df: torch.Tensor, n: int) -> None:
        """Smoothed inverse document frequency (scikit-learn's) of buckets seen in ``n`` training
        texts (``df``: texts per bucket); 0 for buckets no training text had."""
        idf = torch.log((1.0 + n) / (1.0 + df.double())) + 1.0
        self.lexical_idf.copy_(torch.where(df > 0, idf, torch.zeros_like(idf)).float())

    def round_lexical(self) -> None:
        """Round the lexical tables to float16 in place: the artifact stores them so (half the
        size), and the head that is calibrated and reported must be the one that is served."""
        if not self.lexical_on:
            return
        with torch.no_grad():
            for t in (self.lexical_bag.weight, self.lexical_idf):
                t.copy_(t.half().float())

    def export_state(self) -> dict[str, torch.Tensor]:
        """The weights as the artifact stores them: float32, the lexical tables float16."""
        return {k: (v.detach().cpu().half() if k in LEXICAL_TABLES else v.detach().cpu())
                for k, v in self.state_dict().items()}

    def lexical_vector(self, ids: torch.Tensor, counts: torch.Tensor,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, lexical_dim) TF-IDF-weighted sum of bucket embeddings and an (n,) mask of items
        with at least one n-gram seen in training."""
        tf = torch.where(counts > 0, 1.0 + torch.log(counts.clamp(min=1.0)), torch.zeros_like(counts))
        w = tf * self.lexical_idf[ids]
        norm = w.norm(dim=-1, keepdim=True)
        return self.lexical_bag(ids, per_sample_weights=w / norm.clamp(min=1e-12)), norm[:, 0] > 0

    def _views(self, text, text_mask, image, image_mask, lex_ids, lex_counts):
        mt = text_mask.float().unsqueeze(-1)
        mi = image_mask.float().unsqueeze(-1)
        views = [self.text(text) * mt, self.image((image - self.image_mean) / self.image_std) * mi]
        masks = [mt, mi]
        if self.lexical_on:
            if lex_ids is None:  # no n-grams given: the channel is absent for every item
                ml = torch.zeros_like(mt)
                views.append(torch.zeros(len(text), self.cfg.hidden, device=text.device))
            else:
                vec, present = self.lexical_vector(lex_ids, lex_counts)
                ml = present.float().unsqueeze(-1)
                views.append(self.lexical(vec) * ml)
            masks.append(ml)
        return views, torch.cat(masks, dim=-1)

    def forward(
        self, text: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor,
        image_mask: torch.Tensor, lex_ids: torch.Tensor | None = None,
        lex_counts: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        views, masks = self._views(text, text_mask, image, image_mask, lex_ids, lex_counts)
        if self.cfg.fusion == "concat":
            z = self.trunk(torch.cat([*views, masks], dim=-1))
            return {a: self.outs[a](z) for a in self.axes}
        out, _ = self._gated(views, masks)
        return out

    def _gated(self, views: list[torch.Tensor], masks: torch.Tensor, logits: bool = True,
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Per axis, logits (skipped without ``logits``: the gates alone skip every MLP) and gates."""
        t, i = views[0], views[1]
        both = torch.cat([*views, masks], dim=-1)
        absent = (masks == 0) & (masks.sum(-1, keepdim=True) > 0)  # keep one slot if none present
        out, gates = {}, {}
        for a in self.axes:
            g = self.gates[a](both).masked_fill(absent, -1e4).softmax(-1)
            gates[a] = g
            if not logits:
                continue
            mix = g[:, :1] * t + g[:, 1:2] * i
            if len(views) > 2:
                mix = mix + g[:, 2:3] * views[2]
            out[a] = self.mlps[a](torch.cat([mix, t * i], dim=-1))
        return out, gates

    def gate_weights(
        self, text: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor,
        image_mask: torch.Tensor, lex_ids: torch.Tensor | None = None,
        lex_counts: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor] | None:
        """Per axis, each item's (text, image[, lexical]) weights: the share each input had in the
        decision (a tag's evidence). None for the concat head, which has no gate to read."""
        if self.cfg.fusion != "gated":
            return None
        views, masks = self._views(text, text_mask, image, image_mask, lex_ids, lex_counts)
        return self._gated(views, masks, logits=False)[1]


class HeadEnsemble(nn.Module):
    """The mean of ``cfg.members`` heads' logits, each trained alone with its own seed.

    Why: the auto rule's coverage is bound by how well a value's scores order right tags above
    wrong ones, and averaging heads that differ only by their seed evens out each one's accidents
    (measured with ``python -m bench.head_ensemble``: docs/MODEL.md). It costs ``members`` times the
    head's training (once per calibration fold too) and its size; the encoders, which dominate
    serving, are shared. Same interface as :class:`FusionHead`: logits, gates (their mean: each
    input's share in the averaged decision) and the stored state (``members.<i>.<name>``).
    """

    def __init__(self, cfg: HeadConfig, heads: list[FusionHead] | None = None) -> None:
        """``heads``: members already trained (kept as they are, no copy); else fresh ones."""
        super().__init__()
        if cfg.members < 2:
            raise ValueError(f"an ensemble needs at least 2 members, not {cfg.members}")
        if heads is not None and len(heads) != cfg.members:
            raise ValueError(f"the config names {cfg.members} members, {len(heads)} were given")
        self.cfg = cfg
        self.members = nn.ModuleList(heads if heads is not None else
                                     (FusionHead(replace(cfg, members=1)) for _ in range(cfg.members)))
        self.axes = self.members[0].axes

    def forward(self, *inputs: torch.Tensor | None) -> dict[str, torch.Tensor]:
        outs = [m(*inputs) for m in self.members]
        return {a: torch.stack([o[a] for o in outs]).mean(0) for a in outs[0]}

    def gate_weights(self, *inputs: torch.Tensor | None) -> dict[str, torch.Tensor] | None:
        gates = [m.gate_weights(*inputs) for m in self.members]
        if gates[0] is None:
            return None
        return {a: torch.stack([g[a] for g in gates]).mean(0) for a in gates[0]}

    def round_lexical(self) -> None:
        for m in self.members:
            m.round_lexical()

    def export_state(self) -> dict[str, torch.Tensor]:
        return {f"members.{i}.{k}": v for i, m in enumerate(self.members)
                for k, v in m.export_state().items()}


def build(cfg: HeadConfig) -> FusionHead | HeadEnsemble:
    """The head a config describes: one, or an ensemble of ``cfg.members``."""
    return HeadEnsemble(cfg) if cfg.members > 1 else FusionHead(cfg)
