"""The grouped split never puts two copies of a product on different sides."""

from __future__ import annotations

import numpy as np

from shared.ml.split import duplicate_groups, grouped_split


def test_duplicates_by_title_or_image_stay_together() -> None:
    texts = ["Nike Men's T-Shirt", "nike mens t shirt", "Puma cap", "Red bag", "Blue bag"] * 40
    hashes = [None, "h1", "h1", "h2", None] * 40  # Puma cap shares a photo with the Nike shirt
    groups = duplicate_groups(texts, hashes)
    assert groups[0] == groups[1] == groups[2]
    parts = grouped_split(groups, {"train": 0.6, "cal": 0.2, "val": 0.2}, seed=3)
    assert sum(len(p) for p in parts.values()) == len(texts)
    side = {int(i): name for name, idx in parts.items() for i in idx}
    for g in np.unique(groups):
        assert len({side[i] for i in np.nonzero(groups == g)[0]}) == 1


def test_split_is_seeded() -> None:
    groups = np.arange(500)
    a = grouped_split(groups, {"train": 0.8, "val": 0.2}, seed=1)
    b = grouped_split(groups, {"train": 0.8, "val": 0.2}, seed=1)
    assert all((a[k] == b[k]).all() for k in a)
    assert 90 <= len(a["val"]) <= 110
