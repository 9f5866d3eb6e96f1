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


def test_normalise_title_reads_every_script() -> None:
    from shared.ml.dataset import normalise_title

    assert normalise_title("Nike Men's T-Shirt") == normalise_title("nike mens t shirt")
    assert normalise_title("ＮＩＫＥ　Ｍｅｎｓ") == normalise_title("nike mens")  # full-width forms
    assert normalise_title("兰蔻 小黑瓶 精华液 30ml") == "兰蔻小黑瓶精华液30ml"
    punctuated = "【正品】兰蔻小黑瓶，精华液！30ML"
    assert normalise_title(punctuated) == normalise_title("正品 兰蔻小黑瓶 精华液 30ml")
    assert normalise_title("हिन्दी किताब") == "हिन्दीकिताब"  # combining vowel signs stay in the word
    assert normalise_title("🎁🎁 !!! ——") == ""
    assert normalise_title("Straße") == normalise_title("STRASSE")  # casefold


def test_chinese_titles_group_only_with_their_copies() -> None:
    texts = ["兰蔻小黑瓶精华液 30ml", "兰蔻 小黑瓶 精华液 30ML", "雅诗兰黛小棕瓶眼霜", "SK-II 神仙水 230ml",
             "资生堂红腰子精华", "🎁🎁🎁", "！！！", "", "   ", "🔥"]
    groups = duplicate_groups(texts, [None] * len(texts))
    assert groups[0] == groups[1]  # the same title, spaced and cased differently
    assert len(set(groups[1:].tolist())) == len(texts) - 1  # everything else stands alone
    # Titles that normalise to nothing (emoji, punctuation, empty) never merge with each other.
    assert len({int(groups[i]) for i in range(5, 10)}) == 5


def test_empty_titles_still_group_by_image() -> None:
    groups = duplicate_groups(["🎁", "", "🎁"], ["h1", "h1", None])
    assert groups[0] == groups[1] != groups[2]
