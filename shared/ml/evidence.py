"""Why a tag was given: the share each input had in the decision, and what each input alone says.

Reviewers and sellers ask why a tag was given. The gated head already decides, per axis and item,
how much to trust the title and the photo (``FusionHead.gate_weights``); those weights are the
tag's input shares (with the lexical channel, the title's n-grams are part of the title: their
weight is added to the title's share). The head was trained with modality dropout, so it can
also score an item from its title alone or its photo alone: when both inputs are present and
each, alone, would have auto-applied a *different* value (its score clears that value's
threshold), the two inputs contradict each other: most often the photo shows another product.
Then nothing about the item can be trusted, so the item applies nothing: every tag goes to
review with reason ``disagreement`` (``Prediction.disagreements`` names the axes the inputs
disagreed on). Sending only the disagreeing axis left a wrong photo's subCategory auto-applied
at .56 precision.

An input's solo opinion counts only on axes where it has earned trust: at training time, on the
calibration part, each input's solo auto tags must themselves reach the precision target (95%
lower bound, :func:`fit_trust`). Without that, the photo alone — confident and often wrong about
gender — sent 11% of clean fashion products' gender tags to review, 99% of them correct.

The same table guards items that arrive with one input only (a title whose photo failed, a photo
without a title): the fused thresholds were fitted on items with both, so an axis auto-applies
from one input only where that input's solo auto tags reached the target; elsewhere its tags go
to review with reason ``one_input``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from shared.ml.bounds import precision_lower_bound
from shared.ml.calibration import probabilities
from shared.ml.head import FusionHead
from shared.ml.labels import Axis

BATCH = 2048


@dataclass
class Evidence:
    """Per axis: input shares (n x 2: title, photo; None for a head without gates) and the
    calibrated probabilities from the title alone and from the photo alone (rows of zeros for
    items without both inputs: never scored, never read); which items had a title and which a
    photo. ``trusted``: axes on which both inputs' solo opinions count;
    ``alone``: per input, the axes it may auto-apply on its own (None: no limit, older models)."""

    axes: list[Axis]
    shares: dict[str, np.ndarray] | None
    title: dict[str, np.ndarray]
    photo: dict[str, np.ndarray]
    has_title: np.ndarray
    has_photo: np.ndarray
    trusted: frozenset[str] = frozenset()
    alone: dict[str, frozenset[str]] | None = None

    @property
    def both(self) -> np.ndarray:
        """Items with both inputs: the only ones whose single-input predictions mean anything."""
        return self.has_title & self.has_photo

    def one_input(self) -> dict[str, np.ndarray]:
        """Per axis, the items that came with one input only which may not auto-apply it alone."""
        n = len(self.has_title)
        if self.alone is None:
            return {a.name: np.zeros(n, bool) for a in self.axes}
        title_only, photo_only = self.has_title & ~self.has_photo, self.has_photo & ~self.has_title
        return {a.name: (title_only & (a.name not in self.alone["title"]))
                | (photo_only & (a.name not in self.alone["photo"])) for a in self.axes}

    def disagreements(self) -> dict[str, np.ndarray]:
        """Per single-label axis, the items whose title alone and photo alone would each have
        auto-applied a different value (multi-label axes: never; their values co-occur by design)."""
        out = {}
        for a in self.axes:
            if a.kind != "single":
                continue
            t, p = self.title[a.name], self.photo[a.name]
            if a.name not in self.trusted:
                out[a.name] = np.zeros(len(self.both), bool)
                continue
            thr = np.array([a.threshold(v) for v in a.values])
            ti, pi = t.argmax(1), p.argmax(1)
            out[a.name] = (self.both & (ti != pi)
                           & (t.max(1) >= thr[ti]) & (p.max(1) >= thr[pi]))
        return out

    def held(self) -> np.ndarray:
        """Per item: its inputs disagreed on some axis, so none of its tags is applied."""
        held = np.zeros(len(self.both), bool)
        for flags in self.disagreements().values():
            held |= flags
        return held

    def withheld(self) -> dict[str, np.ndarray]:
        """What evaluation withholds, per axis: every axis of a held item, and the axes an item
        with one input may not apply from it alone."""
        held, one = self.held(), self.one_input()
        return {a.name: held | one[a.name] for a in self.axes}

    def item(self, k: int, axis: Axis) -> dict:
        """One item's evidence on one axis, as stored with its tags and returned by the read API."""
        doc: dict = {}
        if self.shares is not None:
            g = self.shares[axis.name][k]
            doc["shares"] = {"title": round(float(g[0]), 4), "photo": round(float(g[1]), 4)}
        if self.both[k]:
            for key, probs in (("title_only", self.title), ("photo_only", self.photo)):
                row = probs[axis.name][k]
                j = int(row.argmax())
                doc[key] = {"value": axis.values[j], "score": round(float(row[j]), 4)}
        return doc


def _probs(head: FusionHead, axes: list[Axis], tensors: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    out = head(*tensors)
    return {a.name: probabilities(a, out[a.name].float().cpu().numpy()) for a in axes}


def _solo_probs(
    head: FusionHead, axes: list[Axis], inputs: tuple[torch.Tensor, ...], none: torch.Tensor,
    lex: tuple[torch.Tensor, ...], no_lex: tuple[torch.Tensor, ...],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """What the title alone and the photo alone say, scored only for the items that have both
    (nothing reads a solo opinion of any other item: :attr:`Evidence.both`); the other rows are
    zeros, which clear no threshold. A batch of titles without photos costs no head pass here."""
    tx, tm, ix, im = inputs
    n = len(tx)
    title = {a.name: np.zeros((n, len(a.values)), np.float32) for a in axes}
    photo = {a.name: np.zeros((n, len(a.values)), np.float32) for a in axes}
    rows = torch.nonzero(tm & im).flatten()
    if len(rows) == 0:
        return title, photo
    at = rows.cpu().numpy()
    tx, tm, ix, im, none = (t[rows] for t in (tx, tm, ix, im, none))
    lex, no_lex = tuple(t[rows] for t in lex), tuple(t[rows] for t in no_lex)
    for out, got in ((title, _probs(head, axes, (tx, tm, ix, none, *lex))),
                     (photo, _probs(head, axes, (tx, none, ix, im, *no_lex)))):
        for name, p in got.items():
            out[name][at] = p
    return title, photo


def fit_trust(ev: Evidence, y: dict[str, np.ndarray], target: float, confidence: float) -> dict | None:
    """Per single-label axis, each input's solo auto tags on held-out items that had both inputs:
    how many (``n``), how many right (``hits``) and the lower bound of their precision; the axis is
    ``trusted`` when both bounds reach ``target``. Stored in the manifest (``disagreement``).
    None for a catalogue of one input (titles only, photos only): its thresholds were fitted on
    that input alone, and there is nothing to disagree."""
    if not ev.both.any():
        return None
    axes = {}
    for a in ev.axes:
        if a.kind != "single" or a.name not in y:
            continue
        thr = np.array([a.threshold(v) for v in a.values])
        labelled = ev.both & (y[a.name] != -1)
        row: dict = {}
        for key, probs in (("title", ev.title), ("photo", ev.photo)):
            p = probs[a.name]
            top = p.argmax(1)
            auto = labelled & (p.max(1) >= thr[top])
            n, hits = int(auto.sum()), int((top == y[a.name])[auto].sum())
            row[key] = {"n": n, "hits": hits,
                        "lower": round(float(precision_lower_bound(hits, n, confidence)), 4) if n else 0.0}
        row["trusted"] = all(row[k]["lower"] >= target for k in ("title", "photo"))
        axes[a.name] = row
    return {"target": target, "confidence": confidence, "axes": axes}


def trusted_axes(doc: dict | None) -> frozenset[str]:
    """The axes a manifest's ``disagreement`` table trusts (none for models without one)."""
    return frozenset(n for n, r in (doc or {}).get("axes", {}).items() if r.get("trusted"))


def alone_axes(doc: dict | None) -> dict[str, frozenset[str]] | None:
    """Per input, the axes where its solo auto tags reached the target (None without a table).
    Multi-label axes are not in the table: one input alone never auto-applies them."""
    rows = (doc or {}).get("axes", {})
    if not any(r["title"]["n"] or r["photo"]["n"] for r in rows.values()):
        return None  # no item had both inputs: the thresholds are the one input's own
    return {key: frozenset(n for n, r in rows.items() if r[key]["lower"] >= doc["target"])
            for key in ("title", "photo")}


@torch.inference_mode()
def input_evidence(
    head: FusionHead, axes: list[Axis], text: np.ndarray, text_mask: np.ndarray,
    image: np.ndarray, image_mask: np.ndarray, device: torch.device,
    trusted: frozenset[str] = frozenset(), alone: dict[str, frozenset[str]] | None = None,
    lex_ids: np.ndarray | None = None, lex_counts: np.ndarray | None = None,
) -> Evidence:
    """The evidence of ready-made features: gate weights and single-input probabilities.

    With the lexical channel (``lex_ids``/``lex_counts``: the titles' hashed n-grams) the title
    is its embedding and its n-grams together: "title alone" keeps both, "photo alone" drops
    both, and the title's share is the sum of the two views' gate weights."""
    n = len(text)
    parts: dict[str, dict[str, list[np.ndarray]]] = {"shares": {}, "title": {}, "photo": {}}
    gated = head.cfg.fusion == "gated"
    for s in range(0, n, BATCH):
        sl = slice(s, s + BATCH)
        tx, ix = torch.from_numpy(text[sl]).to(device), torch.from_numpy(image[sl]).to(device)
        tm, im = torch.from_numpy(text_mask[sl]).to(device), torch.from_numpy(image_mask[sl]).to(device)
        none = torch.zeros_like(tm)
        lex: tuple[torch.Tensor, ...] = ()
        no_lex: tuple[torch.Tensor, ...] = ()
        if lex_ids is not None:
            ids = torch.from_numpy(lex_ids[sl]).to(device)
            counts = torch.from_numpy(lex_counts[sl]).to(device)
            lex, no_lex = (ids, counts), (ids, torch.zeros_like(counts))
        title, photo = _solo_probs(head, axes, (tx, tm, ix, im), none, lex, no_lex)
        gates = head.gate_weights(tx, tm, ix, im, *lex) if gated else None
        for a in axes:
            parts["title"].setdefault(a.name, []).append(title[a.name])
            parts["photo"].setdefault(a.name, []).append(photo[a.name])
            if gates is not None:
                g = gates[a.name].float().cpu().numpy()
                if g.shape[1] == 3:  # title embedding, photo, title n-grams: the title's is 0 + 2
                    g = np.stack([g[:, 0] + g[:, 2], g[:, 1]], axis=1)
                parts["shares"].setdefault(a.name, []).append(g)

    def joined(key: str, a: Axis, width: int) -> np.ndarray:
        got = parts[key].get(a.name)
        return np.concatenate(got) if got else np.zeros((0, width), np.float32)

    return Evidence(
        axes=axes,
        shares={a.name: joined("shares", a, 2) for a in axes} if gated else None,
        title={a.name: joined("title", a, len(a.values)) for a in axes},
        photo={a.name: joined("photo", a, len(a.values)) for a in axes},
        has_title=np.asarray(text_mask, bool), has_photo=np.asarray(image_mask, bool),
        trusted=trusted, alone=alone,
    )
