"""The plain baseline every model result stands beside: TF-IDF character n-grams + logistic regression.

Character n-grams (1-4, inside word boundaries) read any script and need no pretrained weights; a
linear model on them is the "10-line baseline" the tagger must beat on the same rows and split.
It is calibrated and thresholded exactly like the model (:mod:`shared.ml.calibration`), so its auto
precision and coverage compare like for like. Text only: it does not see the photo.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from shared.ml.labels import Axis
from shared.ml.progress import progress

MAX_FEATURES = 200_000  # bounds memory on large catalogues; far above what small ones produce


def vectoriser(**options) -> TfidfVectorizer:
    """The baseline's n-grams and weighting (also the model's text experts': :mod:`shared.ml.experts`)."""
    return TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True, **options)


@dataclass
class Baseline:
    """One vectoriser shared by the axes, one logistic regression per axis (per value for multi-label)."""

    vectoriser: TfidfVectorizer
    models: dict[str, list[LogisticRegression | None] | LogisticRegression | None]

    @classmethod
    def fit(cls, axes: list[Axis], texts: list[str], y: dict[str, np.ndarray], c: float = 10.0,
            seed: int = 0, show_progress: bool = False, desc: str = "fit baseline") -> Baseline:
        """Fit on the training part's texts and targets (``shared.ml.labels.targets``); one
        progress step per axis (a 140-value axis of 30,000 titles takes a minute or two)."""
        vec = vectoriser(min_df=2 if len(texts) >= 1000 else 1, max_features=MAX_FEATURES)
        x = vec.fit_transform(texts)
        models: dict[str, list[LogisticRegression | None] | LogisticRegression | None] = {}
        bar = progress(len(axes), desc, show_progress, unit="axis")
        for a in axes:
            ya = y[a.name]
            if a.kind == "single":
                keep = ya >= 0
                models[a.name] = _logreg(x[keep], ya[keep], c, seed) if keep.any() else None
            else:
                keep = (ya >= 0).all(axis=1)
                models[a.name] = [_logreg(x[keep], ya[keep, k].astype(int), c, seed)
                                  for k in range(len(a.values))]
            bar.update()
        bar.close()
        return cls(vec, models)

    def probabilities(self, axes: list[Axis], texts: list[str]) -> dict[str, np.ndarray]:
        """Per-axis probabilities over the axis's values, like ``Tagger.probabilities``."""
        x = self.vectoriser.transform(texts)
        out: dict[str, np.ndarray] = {}
        for a in axes:
            model = self.models.get(a.name)
            if a.kind == "single":
                p = np.zeros((len(texts), len(a.values)))
                if isinstance(model, LogisticRegression):
                    p[:, model.classes_] = model.predict_proba(x)
                out[a.name] = p
            else:
                cols = [m.predict_proba(x)[:, list(m.classes_).index(1)] if m is not None and 1 in m.classes_
                        else np.zeros(len(texts)) for m in (model or [])]
                out[a.name] = np.stack(cols, axis=1) if cols else np.zeros((len(texts), 0))
        return out


def _logreg(x, y: np.ndarray, c: float, seed: int) -> LogisticRegression | None:
    """A fitted model, or None when the part has a single class (nothing to separate)."""
    if len(np.unique(y)) < 2:
        return None
    model = LogisticRegression(C=c, max_iter=1000, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes on tiny parts are not the user's problem
        model.fit(x, y)
    return model
