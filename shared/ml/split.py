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


def near_duplicate_pairs(
    vectors: np.ndarray, mask: np.ndarray, threshold: float, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) of rows whose cosine similarity is at least ``threshold``, and that similarity.

    Photos of one physical item taken a moment apart never have the same bytes, yet a model scores
    one of them as if it had seen the other; rows without a vector (``mask`` false) pair with nothing.
    """
    idx = np.nonzero(mask)[0]
    if len(idx) < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    v = vectors[idx].astype(np.float32)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    ii, jj, ss = [], [], []
    for s in range(0, len(idx), chunk):
        sims = v[s : s + chunk] @ v.T
        r, c = np.nonzero(sims >= threshold)
        keep = c > r + s  # each pair once, never an item with itself
        ii.append(idx[r[keep] + s])
        jj.append(idx[c[keep]])
        ss.append(sims[r[keep], c[keep]])
    return np.concatenate(ii), np.concatenate(jj), np.concatenate(ss)


def max_near_duplicate_group(n: int) -> int:
    """The largest group near-duplicate photos may build among ``n`` photos: one item's shots, not
    a whole look-alike value (a value grouped whole would leave the served head's training with
    the calibration part)."""
    return max(2, min(20, n // 150))


def group_near_duplicates(
    groups: np.ndarray, vectors: np.ndarray, usable: np.ndarray, similarity: float
) -> tuple[np.ndarray, dict]:
    """``groups`` with the ``usable`` photos at least ``similarity`` cosine-similar joined (groups
    capped by :func:`max_near_duplicate_group`), and the log of what was joined."""
    pairs = near_duplicate_pairs(vectors, usable, similarity)
    joined, log = merge_near_duplicates(groups, pairs, max_near_duplicate_group(int(usable.sum())))
    log["similarity"] = similarity
    return joined, log


def merge_near_duplicates(
    groups: np.ndarray, pairs: tuple[np.ndarray, np.ndarray, np.ndarray], max_group: int
) -> tuple[np.ndarray, dict[str, int]]:
    """``groups`` with near-duplicate pairs joined, the most similar pairs first; a join that would
    make a group larger than ``max_group`` is skipped, so a chain of look-alikes (plain white
    socks, one shade of apple) cannot swallow a whole part of the split. Returns the new group per
    item and a log: pairs seen, joins made, joins skipped for size, largest group."""
    n = len(groups)
    uf = _UnionFind(n)
    first: dict[int, int] = {}
    for i, g in enumerate(groups):  # the exact-duplicate groups, as they were
        g = int(g)
        if g in first:
            uf.union(first[g], i)
        else:
            first[g] = i
    size = np.bincount([uf.find(i) for i in range(n)], minlength=n)
    joined = skipped = 0
    i_s, j_s, sims = pairs
    for k in np.argsort(-sims, kind="stable"):
        a, b = uf.find(int(i_s[k])), uf.find(int(j_s[k]))
        if a == b:
            continue
        if size[a] + size[b] > max_group:
            skipped += 1
            continue
        uf.union(a, b)
        root = uf.find(a)
        size[root] = size[a] + size[b]
        joined += 1
    out = np.array([uf.find(i) for i in range(n)])
    largest = int(np.bincount(out).max()) if n else 0
    return out, {"pairs": int(len(sims)), "joined": joined, "skipped_for_size": skipped,
                 "largest_group": largest}
