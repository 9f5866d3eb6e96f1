"""Consistent tags: which values of two axes contradict each other, learned from the training labels,
and the one step that keeps two contradicting ``auto`` tags off the same product.

No taxonomy is written by hand: every pair of single-label axes is read off the labels the trainer
may learn from (items labelled on both axes). A value pair (u on axis a, v on axis b) is a
**contradiction** when either

* **u implies another value** of b: u has ``min_support`` items or more and at least
  ``1 - epsilon`` of them carry one value v* of b (articleType Tshirts => subCategory Topwear); then
  every other value of b contradicts u, rare ones included; or
* **u and v avoid each other**: independence predicts at least ``min_expected`` items with both,
  and at most ``epsilon`` of that many carry both (gender Men and articleType Tops: 1 seen, 656
  expected).

Why this rule: the labels are noisy (thousands of same-title rows disagree; Wallets sits under three
subCategories), so "never seen together" is too brittle: one mislabelled row would erase a
constraint. Noise that moves a label at random joins a pair about ``noise rate x expected`` times,
so a pair seen no more than ``epsilon`` (1%) of what independence predicts is at the noise level;
a functional dependency (the articleType -> subCategory -> masterCategory tree) is read with the
same tolerance. Co-occurrence shares alone (P(v | u) < 1%) would call every unusual but real
pair a contradiction just because v is rare (a gold T-shirt), and they did on fashion-small: a
share rule sent 26 of 3,745 held-out items to review, 59 of their 63 auto tags correct (Men's
handbags, Unisex personal care); this rule sent 4 (7 of 8 correct). ``min_expected`` leaves pairs
of rare values unconstrained: their absence is no evidence. A wrong constraint costs coverage (both
tags go to review); a missing one lets two contradicting auto tags through. Multi-label axes are
left out: their values co-occur by design, so "u contradicts v" is not read off them.

Decoding: rankings and calibrated scores stay as they are (each score is its value's own
probability); only ``auto`` decisions change. When the auto tags of two axes of an item
contradict, both axes go to review: which one is wrong is not known, and the precision each
promised was measured mostly on items without such a conflict. So after
:meth:`Consistency.resolve` no two auto tags of an item contradict. The predictor and the
evaluation both call ``resolve``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

EPSILON = 0.01  # the label-noise level: share of exceptions an implication or an avoidance tolerates
MIN_SUPPORT = 10  # items a value needs before it may imply a value of another axis
MIN_EXPECTED = 5.0  # co-occurrences independence predicts before an absence is evidence (e^-5)

Matrices = dict[tuple[str, str], np.ndarray]
SEP = "|"  # between value names in the JSON


class AxisLike(Protocol):
    """What this module reads of ``shared.ml.labels.Axis`` (kept numpy-only: no import of it)."""

    name: str
    kind: str
    values: list[str]


@dataclass
class Consistency:
    """Contradicting value pairs per pair of single-label axes, by value name.

    ``rows[(a, b)][u]`` is ``("not", values)`` (u contradicts those values of b) or ``("only",
    values)`` (u contradicts every value of b but those: an implication when there is one).
    """

    rows: dict[tuple[str, str], dict[str, tuple[str, frozenset[str]]]]
    rule: dict[str, float] = field(default_factory=dict)
    _compiled: dict[tuple, Matrices] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def fit(cls, axes: Sequence[AxisLike], y: Mapping[str, np.ndarray], epsilon: float = EPSILON,
            min_support: int = MIN_SUPPORT, min_expected: float = MIN_EXPECTED) -> Consistency:
        """Learn the contradictions from training targets (``shared.ml.labels.targets``: class
        index per item, negative where unlabelled or unknown)."""
        single = [a for a in axes if a.kind == "single" and a.name in y]
        rows: dict[tuple[str, str], dict[str, tuple[str, frozenset[str]]]] = {}
        for i, a in enumerate(single):
            for b in single[i + 1:]:
                bad = _excluded(y[a.name], y[b.name], len(a.values), len(b.values), epsilon,
                                min_support, min_expected)
                if bad.any():
                    # Rows on the axis with more values: their lists are the short ones.
                    (ra, rb, m) = (a, b, bad) if len(a.values) >= len(b.values) else (b, a, bad.T)
                    rows[(ra.name, rb.name)] = _rows(ra.values, rb.values, m)
        return cls(rows, {"epsilon": epsilon, "min_support": min_support,
                          "min_expected": min_expected})

    def to_json(self) -> dict[str, Any]:
        """Compact JSON for the manifest, one line per value once indented:
        ``{"pairs": {a: {b: {"only": {u: "v|w"}, "not": {u: "v|w"}}}}}`` ("only": u goes with
        these values of b and no other; "not": u contradicts these). A list when a name has "|"."""
        pairs: dict[str, dict[str, dict[str, dict[str, str | list[str]]]]] = {}
        for (a, b), rows in self.rows.items():
            out: dict[str, dict[str, str | list[str]]] = {}
            for u, (kind, vs) in sorted(rows.items()):
                names = sorted(vs)
                out.setdefault(kind, {})[u] = names if any(SEP in v for v in names) else SEP.join(names)
            pairs.setdefault(a, {})[b] = out
        return {"rule": self.rule, "pairs": pairs}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Consistency:
        rows: dict[tuple[str, str], dict[str, tuple[str, frozenset[str]]]] = {}
        for a, by_b in doc.get("pairs", {}).items():
            for b, kinds in by_b.items():
                rows[(a, b)] = {
                    u: (kind, frozenset(v.split(SEP) if isinstance(v, str) else v))
                    for kind in ("only", "not") for u, v in kinds.get(kind, {}).items()
                }
        return cls(rows, dict(doc.get("rule", {})))

    def contradicts(self, a: str, u: str, b: str, v: str) -> bool:
        """Whether u on axis a and v on axis b contradict (either order of the axes)."""
        for (x, p, y, q) in ((a, u, b, v), (b, v, a, u)):
            row = self.rows.get((x, y), {}).get(p)
            if row is not None:
                return (q in row[1]) == (row[0] == "not")
        return False

    def implied(self, a: str, u: str, b: str) -> str | None:
        """The value of b that u implies, when it learned one (e.g. Tshirts -> Topwear); read in
        u's own rows, which exist when a is the axis with more values (the finer one)."""
        row = self.rows.get((a, b), {}).get(u)
        return next(iter(row[1])) if row and row[0] == "only" and len(row[1]) == 1 else None

    def matrices(self, axes: Sequence[AxisLike]) -> Matrices:
        """Boolean (values of a x values of b) contradiction matrices over these axes' values."""
        key = tuple((a.name, tuple(a.values)) for a in axes)
        if key not in self._compiled:
            index = {a.name: {v: j for j, v in enumerate(a.values)} for a in axes}
            out: Matrices = {}
            for (a, b), rows in self.rows.items():
                if a not in index or b not in index:
                    continue
                m = np.zeros((len(index[a]), len(index[b])), bool)
                for u, (kind, vs) in rows.items():
                    if u in index[a]:
                        cols = [index[b][v] for v in vs if v in index[b]]
                        m[index[a][u]] = kind == "only"
                        m[index[a][u], cols] = kind == "not"
                out[(a, b)] = m
            self._compiled[key] = out
        return self._compiled[key]

    def conflicts(self, axes: Sequence[AxisLike], auto: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per axis, the items (bool) whose auto tag on it contradicts an auto tag of another axis.
        ``auto[axis]``: (items x values) bool, the values applied automatically."""
        n = len(next(iter(auto.values()))) if auto else 0
        hit = {name: np.zeros(n, bool) for name in auto}
        for (a, b), m in self.matrices(axes).items():
            if a in auto and b in auto and m.any():
                # (items x values of b): does some auto value of a contradict this value of b?
                against = auto[a].astype(np.float32) @ m.astype(np.float32) > 0
                both = (against & auto[b]).any(axis=1)
                hit[a] |= both
                hit[b] |= both
        return hit

    def resolve(self, axes: Sequence[AxisLike], auto: Mapping[str, np.ndarray],
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The joint decision: every axis whose auto tag contradicts another auto tag of the item
        goes to review. Returns (auto after, contradicted items per axis); after it,
        :meth:`conflicts` finds nothing, because only auto tags are removed."""
        contradicted = self.conflicts(axes, auto)
        after = {name: m & ~contradicted[name][:, None] for name, m in auto.items()}
        return after, contradicted

    def count_contradictions(self, axes: Sequence[AxisLike], auto: Mapping[str, np.ndarray],
                             ) -> dict[str, int]:
        """Per axis, the items whose auto tag contradicts another auto tag (0 after resolve)."""
        return {name: int(c.sum()) for name, c in self.conflicts(axes, auto).items()}

    @property
    def size(self) -> int:
        """How many (u, row) entries it holds: a measure of what it learned."""
        return sum(len(rows) for rows in self.rows.values())


def top_auto(axes: Sequence[AxisLike], probs: Mapping[str, np.ndarray],
             thresholds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-axis decision as the evaluation makes it: the top value is auto when its score
    reaches its threshold. (items x values) bool per single-label axis."""
    out = {}
    for a in axes:
        if a.kind != "single" or a.name not in probs:
            continue
        p = probs[a.name]
        top = p.argmax(1)
        rows = np.arange(len(p))
        m = np.zeros(p.shape, bool)
        m[rows, top] = p[rows, top] >= thresholds[a.name][top]
        out[a.name] = m
    return out


def _excluded(ya: np.ndarray, yb: np.ndarray, ka: int, kb: int, epsilon: float, min_support: int,
              min_expected: float) -> np.ndarray:
    """(ka x kb) bool: the contradicting value pairs of two axes (the rule in the module doc)."""
    keep = (ya >= 0) & (yb >= 0)
    counts = np.zeros((ka, kb))
    np.add.at(counts, (ya[keep], yb[keep]), 1)
    total = counts.sum()
    if total == 0:
        return np.zeros((ka, kb), bool)
    na, nb = counts.sum(1), counts.sum(0)
    expected = na[:, None] * nb[None, :] / total
    avoid = (counts <= epsilon * expected) & (expected >= min_expected)
    # u implies v*: every other value of b contradicts u (and symmetrically for values of b).
    imp_a = (na >= min_support) & (counts.max(1) >= (1 - epsilon) * na)
    not_top_a = counts < counts.max(1, keepdims=True)
    imp_b = (nb >= min_support) & (counts.max(0) >= (1 - epsilon) * nb)
    not_top_b = counts < counts.max(0, keepdims=True)
    return avoid | (imp_a[:, None] & not_top_a) | (imp_b[None, :] & not_top_b)


def _rows(values_a: list[str], values_b: list[str], bad: np.ndarray,
          ) -> dict[str, tuple[str, frozenset[str]]]:
    """Per value of a with a contradiction: the shorter of its excluded and its allowed values."""
    out = {}
    for i, u in enumerate(values_a):
        if bad[i].any():
            no = frozenset(values_b[j] for j in np.nonzero(bad[i])[0])
            ok = frozenset(values_b[j] for j in np.nonzero(~bad[i])[0])
            out[u] = ("only", ok) if len(ok) < len(no) else ("not", no)
    return out
