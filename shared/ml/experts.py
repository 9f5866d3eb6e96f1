"""Text experts: the baseline's logistic regressions as a channel of the model (issue 12, point 1).

On titles the 10-line baseline (:mod:`shared.ml.baseline`: TF-IDF character 1-4-grams, one
logistic regression per axis, C = 10, fitted to convergence) reads better than the fused head's
small n-gram bag: a near-copy of a training title is recognised n-gram by n-gram. Here that very
model is fitted on the head's training part and its scores are added to the head's logits, each
axis with one weight::

    logits = head(title, photo) + w_axis * expert_scores(title)

Expert scores are log-probabilities for a single-label axis (log-softmax, floored at ``FLOOR``)
and logits for each value of a multi-label axis (clipped to ``±-FLOOR``); an item without a title
gets none (an empty title's scores are the priors, which the head already has). ``w`` is chosen
on the calibration part, where neither the head nor the experts trained, by the lowest negative
log-likelihood after temperature scaling (:func:`fit_weight`); temperatures and thresholds are then
fitted on out-of-fold scores as usual, each fold with experts fitted without it
(:mod:`shared.ml.cross_fit`), so the guarantee covers the sum.

Stored as arrays, never pickled (``experts.safetensors``): the n-gram vocabulary (UTF-8, one
n-gram per line: ``char_wb`` n-grams never hold a newline), its idf, and per axis a
``(values, n-grams)`` coefficient matrix in float16 (rounded before any scoring, so the stored
experts are the calibrated ones) with float32 intercepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from shared.ml.baseline import Baseline, vectoriser
from shared.ml.calibration import fit_temperature, probabilities
from shared.ml.labels import Axis

FLOOR = -9.0  # log-probability floor: a value the experts never saw is unlikely, not impossible
# The grid fit_weight searches: fine near the head alone, coarse where the experts dominate.
WEIGHTS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


@dataclass
class TextExperts:
    """Per-axis linear scores over a fitted TF-IDF vocabulary, and each axis's weight."""

    vocabulary: list[str]
    idf: np.ndarray  # (n-grams,) float32
    coef: dict[str, np.ndarray]  # axis -> (values, n-grams) float16
    intercept: dict[str, np.ndarray]  # axis -> (values,) float32
    kinds: dict[str, str]  # axis -> "single" | "multi"
    weight: dict[str, float] = field(default_factory=dict)  # axis -> w (0 until fitted)
    _vec: TfidfVectorizer | None = field(default=None, repr=False)

    @classmethod
    def fit(cls, axes: list[Axis], texts: list[str], y: dict[str, np.ndarray], c: float = 10.0,
            seed: int = 0, show_progress: bool = False) -> TextExperts:
        """The baseline fitted on ``texts`` (the training part's titles) and ``y`` (its targets)."""
        base = Baseline.fit(axes, texts, y, c, seed, show_progress, desc="fit text experts")
        vocab = sorted(base.vectoriser.vocabulary_, key=base.vectoriser.vocabulary_.get)
        coef, intercept = {}, {}
        for a in axes:
            w = np.zeros((len(a.values), len(vocab)), np.float32)
            b = np.full(len(a.values), FLOOR * 4, np.float32)  # a value with no model: never likely
            model = base.models.get(a.name)
            if a.kind == "single":
                if isinstance(model, LogisticRegression):
                    _single_rows(model, w, b)
                elif (y[a.name] >= 0).any():  # one value only in training: it is certain
                    b[np.bincount(y[a.name][y[a.name] >= 0], minlength=len(a.values)).argmax()] = 0.0
            else:
                for k, m in enumerate(model or []):
                    if m is not None:
                        w[k], b[k] = _positive_row(m)
                    else:  # every known item has the same label for this value
                        yk = y[a.name][(y[a.name] >= 0).all(axis=1), k]
                        b[k] = -FLOOR if yk.size and yk.max() > 0 else FLOOR
            coef[a.name] = w.astype(np.float16)
            intercept[a.name] = b
        return cls(vocab, base.vectoriser.idf_.astype(np.float32), coef, intercept,
                   {a.name: a.kind for a in axes}, {a.name: 0.0 for a in axes})

    def fit_weights(self, axes: list[Axis], logits: dict[str, np.ndarray], scores: dict[str, np.ndarray],
                    y: dict[str, np.ndarray]) -> None:
        """Each axis's weight from held-out items' head ``logits``, expert ``scores`` and targets."""
        self.weight = {a.name: fit_weight(a, logits[a.name], scores[a.name], y[a.name]) for a in axes}

    def _vectoriser(self) -> TfidfVectorizer:
        if self._vec is None:
            vec = vectoriser(vocabulary={g: i for i, g in enumerate(self.vocabulary)})
            vec.idf_ = self.idf.astype(np.float64)
            self._vec = vec
        return self._vec

    def scores(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Per axis, each text's expert scores (rows of zeros for an empty title)."""
        x = self._vectoriser().transform(texts)
        has = np.array([bool(t and t.strip()) for t in texts])
        out: dict[str, np.ndarray] = {}
        for name, kind in self.kinds.items():
            z = np.asarray(x @ self.coef[name].astype(np.float32).T, dtype=np.float32) + self.intercept[name]
            if kind == "single":
                z = z - z.max(axis=1, keepdims=True)
                z = np.maximum(z - np.log(np.exp(z).sum(axis=1, keepdims=True)), FLOOR)
            else:
                z = np.clip(z, FLOOR, -FLOOR)
            z[~has] = 0.0
            out[name] = z.astype(np.float32)
        return out

    def offsets(self, texts: list[str]) -> dict[str, np.ndarray]:
        """What the experts add to the head's logits: their scores times each axis's weight."""
        return {name: self.weight.get(name, 0.0) * s for name, s in self.scores(texts).items()}

    def to_json(self) -> dict:
        """The manifest's ``experts`` key (the arrays go to ``experts.safetensors``)."""
        return {"kind": "tfidf-char_wb-1-4+logistic-regression", "ngrams": len(self.vocabulary),
                "axes": {n: {"kind": k, "weight": self.weight.get(n, 0.0)} for n, k in self.kinds.items()}}

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"vocabulary": np.frombuffer("\n".join(self.vocabulary).encode("utf-8"), np.uint8),
               "idf": self.idf}
        for name in self.kinds:
            out[f"coef.{name}"] = self.coef[name]
            out[f"intercept.{name}"] = self.intercept[name]
        return out

    @classmethod
    def from_artifact(cls, doc: dict, arrays: dict[str, np.ndarray]) -> TextExperts:
        vocab = bytes(arrays["vocabulary"]).decode("utf-8").split("\n") if arrays["vocabulary"].size else []
        axes = doc["axes"]
        return cls(vocab, arrays["idf"], {n: arrays[f"coef.{n}"] for n in axes},
                   {n: arrays[f"intercept.{n}"] for n in axes}, {n: d["kind"] for n, d in axes.items()},
                   {n: float(d["weight"]) for n, d in axes.items()})


def _single_rows(model: LogisticRegression, w: np.ndarray, b: np.ndarray) -> None:
    """A multinomial model's rows into the axis's value order (a binary model is [0, z])."""
    classes = model.classes_
    if len(classes) == 2:
        w[classes[1]], b[classes[1]] = model.coef_[0], model.intercept_[0]
        w[classes[0]], b[classes[0]] = 0.0, 0.0
    else:
        w[classes], b[classes] = model.coef_, model.intercept_


def _positive_row(model: LogisticRegression) -> tuple[np.ndarray, float]:
    """A binary model's logit of the positive class."""
    sign = 1.0 if list(model.classes_).index(1) == 1 else -1.0
    return sign * model.coef_[0], sign * float(model.intercept_[0])


def fit_weight(axis: Axis, logits: np.ndarray, scores: np.ndarray, y: np.ndarray) -> float:
    """The weight of the experts on one axis: the grid point whose sum has the lowest negative
    log-likelihood on held-out items after temperature scaling (0: the experts do not help)."""
    known = (y >= 0) if axis.kind == "single" else (y >= 0).all(axis=1)
    if not known.any():
        return 0.0
    lg, sc, yk = logits[known], scores[known], y[known]
    best, best_nll = 0.0, np.inf
    probe = Axis(axis.name, axis.kind, list(axis.values))
    for w in WEIGHTS:
        z = lg + w * sc
        probe.temperature = fit_temperature(probe, z, yk)
        p = np.clip(probabilities(probe, z), 1e-7, 1 - 1e-7)
        if axis.kind == "single":
            nll = -np.log(p[np.arange(len(yk)), yk]).mean()
        else:
            nll = -(yk * np.log(p) + (1 - yk) * np.log(1 - p)).mean()
        if nll < best_nll - 1e-6:
            best, best_nll = float(w), nll
    return best
