"""Novelty guard: does the model know items like this one? Out-of-domain items are never ``auto``.

Calibrated thresholds promise precision on items like the calibration part; they say nothing
about an emoji string, a Chinese title read by an English tokenizer, a TV's title or a photo of
milk, which the head still maps confidently onto some fashion value. The guard measures how far an
item is from what the model was trained on, per modality, and the predictor sends every tag of an
item it flags to review.

Signals, each normalised so that 1.0 is the limit (a score >= 1.0 means out of domain):

* **distance**, per modality: cosine distance from the item's encoder embedding (the text
  features the head reads; the image backbone's part of the image features, without the colour
  histograms) to the nearest of at most a few hundred k-means centroids of the training part. Its
  limit is the 99.5th percentile of the same distance on the held-out calibration part, so about
  0.5% of in-domain items per modality are flagged by design. Measured on fashion-small with the
  shipped encoders: raw cosine beats centred or standardised features (centring and standardising
  amplify dimensions that barely vary in-domain; with them most grocery-store photos passed, and
  so did colour histograms, which vary with the colour, not the domain).
* **unknown tokens** (title): the share of ``[UNK]`` tokens; emoji and most CJK characters are
  unknown to an English WordPiece vocabulary and embed as near-identical vectors.
* **unknown scripts** (title): the share of letters, digits and symbols in scripts that never occur
  in the training titles. A BERT vocabulary spells Arabic, Cyrillic or Devanagari letter by letter
  without a single ``[UNK]``, but an encoder and head fitted on English titles read them as noise.
  The scripts come from the training titles, so a model trained on Chinese titles accepts Chinese.

Combination: an item is out of domain if ANY modality it has is novel (the score is the maximum).
The gated head may lean on either input for any axis, so one unfamiliar input is enough to make
the scores meaningless, and no axis can be trusted to have ignored it; the cost of a wrong flag is
only a review. A missing modality (no title, undecodable photo) is not evidence either way.

Plain numpy and stdlib: the guard's arrays are stored in the artifact (``novelty.safetensors``,
float16 centroids) and its limits in the manifest's ``novelty`` key.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from shared.errors import ArtifactError

FORMAT = 1
QUANTILE = 0.995  # of calibration distances: the limit, so ~0.5% in-domain flags per modality
MAX_CENTROIDS = {"text": 256, "image": 128}  # fp16: 256x768 + 128x1280 is ~0.7 MB in the artifact
MAX_FIT_ROWS = 20_000  # k-means reads at most this many training rows (seconds, not minutes)
MIN_CALIBRATION = 10  # fewer held-out items with a modality: that modality's distance is not checked
UNKNOWN_FLOOR = 0.5  # the unknown-token limit is never below half the title's tokens
# nor the unknown-script limit below a third of its characters: on product1m-zh-dev, 0.5 let
# through 6.5% of the Chinese titles (those half Latin brand names), a third lets through 0.3%
SCRIPT_FLOOR = 1 / 3
MIN_SCRIPT_COUNT = 3  # a script (or symbol class) counts as seen from this many training characters
MODALITIES = ("text", "image")
NAMES = {"text": "title", "image": "photo"}


class Tokenizer(Protocol):
    unk_token_id: int | None

    def __call__(self, texts: list[str], **kw: Any) -> Any: ...


class FeatureSet(Protocol):
    """Row-aligned model inputs (``shared.ml.head_training.Features``)."""

    text: np.ndarray
    text_mask: np.ndarray
    image: np.ndarray
    image_mask: np.ndarray


def _char_class(ch: str) -> str | None:
    """A character's script (letters, marks, digits: the first word of its Unicode name, e.g.
    LATIN, CJK, ARABIC, DIGIT) or symbol category (So: emoji); None for spaces and punctuation."""
    cat = unicodedata.category(ch)
    if cat[0] in "LMN":
        return unicodedata.name(ch, "UNNAMED").split()[0]
    return cat if cat[0] == "S" else None


def script_counts(texts: Sequence[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for t in texts:
        counts.update(c for ch in unicodedata.normalize("NFKC", t) if (c := _char_class(ch)))
    return counts


def unseen_script_share(texts: Sequence[str], seen: frozenset[str]) -> tuple[np.ndarray, list[str]]:
    """Per text, the share of its classed characters in scripts not in ``seen``, and their names."""
    share, names = np.zeros(len(texts)), []
    for k, t in enumerate(texts):
        counts = script_counts([t])
        total, unseen = sum(counts.values()), {c: n for c, n in counts.items() if c not in seen}
        share[k] = sum(unseen.values()) / total if total else 0.0
        names.append(", ".join(sorted(unseen, key=lambda c: -unseen[c])[:3]))
    return share, names


def unknown_token_share(tokenizer: Tokenizer, texts: Sequence[str]) -> np.ndarray:
    """Per text, the share of its tokens the tokenizer maps to ``[UNK]`` (0 for an empty text)."""
    if not texts or tokenizer.unk_token_id is None:
        return np.zeros(len(texts))
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return np.array([sum(i == tokenizer.unk_token_id for i in row) / len(row) if row else 0.0
                     for row in ids])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def spherical_kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 30) -> np.ndarray:
    """(k, d) unit centroids of unit rows ``x`` (k-means++ start, cosine Lloyd steps); with no more
    rows than ``k``, the rows themselves: an exact nearest-neighbour reference."""
    if len(x) <= k:
        return x.copy()
    rng = np.random.default_rng(seed)
    centres = [int(rng.integers(len(x)))]
    d = 1.0 - x @ x[centres[0]]
    for _ in range(1, k):
        p = np.maximum(d, 0) ** 2
        centres.append(int(rng.choice(len(x), p=p / p.sum())) if p.sum() > 0 else
                       int(rng.integers(len(x))))
        d = np.minimum(d, 1.0 - x @ x[centres[-1]])
    c = x[centres].copy()
    assign = None
    for _ in range(iters):
        new = np.argmax(x @ c.T, axis=1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = x[assign == j]
            if len(members):
                c[j] = members.sum(0)
        c = _unit(c)
    return c


@dataclass
class Reference:
    """One modality's training data in brief: unit centroids of its first ``dims`` feature columns."""

    centroids: np.ndarray  # (k, dims) unit rows
    limit: float  # cosine distance that scores 1.0

    @property
    def dims(self) -> int:
        return self.centroids.shape[1]

    def distance(self, x: np.ndarray) -> np.ndarray:
        """Cosine distance from each row to its nearest centroid."""
        if not len(x):
            return np.zeros(0)
        return 1.0 - (_unit(x[:, : self.dims].astype(np.float32)) @ self.centroids.T).max(axis=1)


def fit_reference(modality: str, train: np.ndarray, calibration: np.ndarray, seed: int = 0,
                  max_centroids: int | None = None, quantile: float = QUANTILE,
                  ) -> tuple[Reference | None, dict[str, Any]]:
    """Centroids from the training rows, the limit from the held-out calibration rows (None, and
    the reason in the stats, when either part is too small to say what in-domain looks like)."""
    stats: dict[str, Any] = {"train_n": len(train), "calibration_n": len(calibration)}
    if len(train) < 2 or len(calibration) < MIN_CALIBRATION:
        return None, {**stats, "skipped": "too few items with this input to fit a reference"}
    k = max_centroids or MAX_CENTROIDS[modality]
    if len(train) > MAX_FIT_ROWS:
        train = train[np.random.default_rng(seed).choice(len(train), MAX_FIT_ROWS, replace=False)]
    centroids = spherical_kmeans(_unit(train.astype(np.float32)), k, seed)
    ref = Reference(centroids.astype(np.float16).astype(np.float32), 1.0)  # as stored: float16
    d = ref.distance(calibration)
    ref.limit = float(np.quantile(d, quantile))
    return ref, {**stats, "centroids": len(ref.centroids), "limit": round(ref.limit, 4),
                 "calibration_median": round(float(np.median(d)), 4)}


@dataclass
class NoveltyScores:
    """Per item: the novelty score (NaN with no usable input; >= 1.0 out of domain) and why."""

    score: np.ndarray
    reasons: list[str | None]

    @property
    def novel(self) -> np.ndarray:
        return np.nan_to_num(self.score, nan=0.0) >= 1.0


class NoveltyGuard:
    """Scores items against the training data; fitted by :func:`fit_guard`, stored in the artifact."""

    def __init__(self, refs: dict[str, Reference], scripts: frozenset[str], unknown_limit: float,
                 script_limit: float, stats: dict[str, Any] | None = None,
                 quantile: float = QUANTILE) -> None:
        self.refs = refs
        self.quantile = quantile
        self.scripts = scripts
        self.unknown_limit = unknown_limit
        self.script_limit = script_limit
        self.stats = stats or {}

    def score(self, texts: Sequence[str], tx: np.ndarray, tm: np.ndarray, ix: np.ndarray,
              im: np.ndarray, tokenizer: Tokenizer) -> NoveltyScores:
        """Scores for ready-made features (``texts`` are the raw titles the text features came from)."""
        n = len(texts)
        signals: list[tuple[np.ndarray, list[str]]] = []  # (normalised score, reason) per signal
        masks = {"text": np.asarray(tm, bool), "image": np.asarray(im, bool)}
        for m, x in (("text", tx), ("image", ix)):
            ref, on = self.refs.get(m), masks[m]
            if ref is not None and on.any():
                d = np.zeros(n)
                d[on] = ref.distance(x[on])
                signals.append((np.where(on, d / ref.limit, np.nan), [
                    f"{NAMES[m]}: far from the training {NAMES[m]}s (distance {v:.2f}, "
                    f"limit {ref.limit:.2f})" for v in d]))
        on = masks["text"]
        if on.any():
            present = [t if ok else "" for t, ok in zip(texts, on, strict=True)]
            unk = unknown_token_share(tokenizer, present)
            signals.append((np.where(on, unk / self.unknown_limit, np.nan),
                            [f"title: {v:.0%} unknown tokens" for v in unk]))
            share, names = unseen_script_share(present, self.scripts)
            signals.append((np.where(on, share / self.script_limit, np.nan),
                            [f"title: {v:.0%} of its characters in scripts the model was not "
                             f"trained on ({s})" for v, s in zip(share, names, strict=True)]))
        if not signals:
            return NoveltyScores(np.full(n, np.nan), [None] * n)
        table = np.stack([s for s, _ in signals])  # (signals, n)
        top = np.where(np.isnan(table), -np.inf, table).max(axis=0)
        score = np.where(np.isinf(top), np.nan, top)  # NaN: no input the guard could read
        reasons: list[str | None] = []
        for k in range(n):
            hits = sorted((-table[j, k], signals[j][1][k]) for j in range(len(signals))
                          if table[j, k] >= 1.0)
            reasons.append("; ".join(r for _, r in hits) or None)
        return NoveltyScores(score, reasons)

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``novelty`` document (the arrays go to ``novelty.safetensors``)."""
        return {"format": FORMAT, "combine": "any present input", "quantile": self.quantile,
                "limits": {**{m: r.limit for m, r in self.refs.items()},  # exact: scores round-trip
                           "unknown_tokens": self.unknown_limit, "unknown_scripts": self.script_limit},
                "scripts": sorted(self.scripts), "stats": self.stats}

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for m, r in self.refs.items():
            out[f"{m}.centroids"] = r.centroids.astype(np.float16)
        return out

    @classmethod
    def from_artifact(cls, doc: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> NoveltyGuard:
        """The guard a manifest's ``novelty`` key and ``novelty.safetensors`` describe."""
        try:
            if doc.get("format") != FORMAT:
                raise ValueError(f"format {doc.get('format')!r}, this code reads {FORMAT}")
            limits = doc["limits"]
            refs = {m: Reference(np.asarray(arrays[f"{m}.centroids"], np.float32), float(limits[m]))
                    for m in MODALITIES if m in limits}
            return cls(refs, frozenset(doc["scripts"]), float(limits["unknown_tokens"]),
                       float(limits["unknown_scripts"]), dict(doc.get("stats") or {}),
                       float(doc.get("quantile", QUANTILE)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"novelty guard: unreadable ({exc!r})") from None


def fit_guard(features: FeatureSet, parts: Mapping[str, np.ndarray], texts: Sequence[str],
              tokenizer: Tokenizer, image_dims: int | None = None, seed: int = 0,
              quantile: float = QUANTILE) -> NoveltyGuard:
    """Fit on the training part, set limits on the calibration part (never on validation).
    ``image_dims``: the leading image columns to compare (the backbone's; not the colour part).
    ``quantile``: of calibration items' distances, the limit (higher: fewer in-domain abstentions,
    less junk caught)."""
    tr, cal = parts["train"], parts["calibration"]
    refs, stats = {}, {}
    for m, x, mask in (("text", features.text, features.text_mask),
                       ("image", features.image[:, :image_dims], features.image_mask)):
        t_rows, c_rows = tr[mask[tr]], cal[mask[cal]]
        ref, stats[m] = fit_reference(m, x[t_rows], x[c_rows], seed, quantile=quantile)
        if ref is not None:
            refs[m] = ref
    counts = script_counts([texts[i] for i in tr])
    scripts = frozenset(c for c, k in counts.items() if k >= MIN_SCRIPT_COUNT)
    cal_texts = [texts[i] for i in cal[features.text_mask[cal]]]
    limits = [UNKNOWN_FLOOR, SCRIPT_FLOOR]
    if cal_texts:  # a catalogue whose own titles are half unknown must not abstain on all of them
        limits[0] = max(UNKNOWN_FLOOR, float(np.quantile(unknown_token_share(tokenizer, cal_texts),
                                                         quantile)) + 0.25)
        limits[1] = max(SCRIPT_FLOOR, float(np.quantile(unseen_script_share(cal_texts, scripts)[0],
                                                        quantile)) + 0.25)
    guard = NoveltyGuard(refs, scripts, limits[0], limits[1], stats, quantile)
    tm, im = features.text_mask[cal], features.image_mask[cal]
    flagged = guard.score([texts[i] for i in cal], features.text[cal], tm, features.image[cal], im,
                          tokenizer).novel
    guard.stats["calibration_flagged"] = round(float(flagged[tm | im].mean()), 4) if (tm | im).any() \
        else None
    return guard
