"""Grouped train/validation/test split: near-duplicates (same normalised title or same image
bytes) always land on the same side, or validation leaks and every number lies."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from shared.ml.dataset import normalise_title


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def duplicate_groups(texts: list[str], image_hashes: list[str | None]) -> np.ndarray:
    """Group id per item: items connected through a shared normalised title or image hash. A title
    that normalises to nothing (emoji, punctuation, empty) joins no group through its text."""
    uf = _UnionFind(len(texts))
    first: dict[str, int] = {}
    for i, (t, h) in enumerate(zip(texts, image_hashes, strict=True)):
        keys = []
        nt = normalise_title(t)
        if nt:
            keys.append("t:" + nt)
        if h:
            keys.append("i:" + h)
        for k in keys:
            if k in first:
                uf.union(first[k], i)
            else:
                first[k] = i
    return np.array([uf.find(i) for i in range(len(texts))])


def grouped_split(
    groups: np.ndarray, fractions: dict[str, float], seed: int = 0
) -> dict[str, np.ndarray]:
    """Indices per part; whole groups are dealt out in a seeded random order until each part has
    its share of items. The first part takes what is left."""
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[int(g)].append(i)
    order = sorted(members)
    rng = np.random.default_rng(seed)
    rng.shuffle(order)
    names = list(fractions)
    want = {n: fractions[n] * len(groups) for n in names[1:]}
    parts: dict[str, list[int]] = {n: [] for n in names}
    for g in order:
        target = next((n for n in names[1:] if len(parts[n]) < want[n]), names[0])
        parts[target].extend(members[g])
    return {n: np.array(sorted(v), dtype=np.int64) for n, v in parts.items()}


def grouped_folds(groups: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold number (0..k-1) per item, whole duplicate groups per fold, for cross-fitting.

    Groups are dealt largest first (ties in a seeded random order) to the fold with the fewest
    items, so folds stay even in size when a few duplicate groups are large.
    """
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[int(g)].append(i)
    rng = np.random.default_rng(seed)
    keys = list(members)
    rng.shuffle(keys)
    keys.sort(key=lambda g: -len(members[g]))  # stable: the shuffle breaks ties
    fold = np.zeros(len(groups), dtype=np.int64)
    sizes = np.zeros(k, dtype=np.int64)
    for g in keys:
        f = int(sizes.argmin())
        fold[members[g]] = f
        sizes[f] += len(members[g])
    return fold
