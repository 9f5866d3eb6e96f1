"""The grouped split never puts two copies of a product on different sides."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from shared.ml.dataset import load_blobs, load_manifest, load_records
from shared.ml.split import duplicate_groups, grouped_split, merge_near_duplicates, near_duplicate_pairs
from shared.ml.train_config import TrainConfig
from shared.ml.training import prepare


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


def test_near_duplicate_pairs_find_close_rows_once() -> None:
    v = np.array([[1, 0, 0], [0.99, 0.1, 0], [0, 1, 0], [0, 0, 0], [0.98, 0.12, 0.05]], dtype=np.float32)
    mask = np.abs(v).sum(axis=1) > 0
    i, j, s = near_duplicate_pairs(v, mask, 0.97, chunk=2)  # chunked like a large catalogue
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == [(0, 1), (0, 4), (1, 4)]
    assert (s >= 0.97).all()
    mask[4] = False  # a row without a photo pairs with nothing
    i, j, _ = near_duplicate_pairs(v, mask, 0.97)
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == [(0, 1)]


def test_merge_joins_closest_first_and_caps_group_size() -> None:
    groups = np.array([0, 0, 2, 3, 4, 5])  # items 0 and 1 are exact copies already
    pairs = (np.array([1, 2, 3, 4]), np.array([2, 3, 4, 5]), np.array([0.99, 0.98, 0.97, 0.96]))
    merged, log = merge_near_duplicates(groups, pairs, max_group=4)
    assert merged[0] == merged[1] == merged[2] == merged[3]  # the closest pairs joined first
    assert merged[4] == merged[5] != merged[0]  # 3-4 would have made a group of 5
    assert log == {"pairs": 4, "joined": 3, "skipped_for_size": 1, "largest_group": 4}


def _catalogue_with_retaken_photos(tmp_path: Path, sample_manifest: Path, copies: int,
                                   titles: bool = True) -> Path:
    """60 sample products, and ``copies`` more whose photos are the first ones shot again (cropped,
    re-encoded: other bytes, the same thing) under titles of their own (or no titles at all)."""
    m = load_manifest(sample_manifest)
    records = load_records(m)[:60]
    blobs = load_blobs(m, records)
    lines = ["id,title,image,kind"]
    for n, (r, b) in enumerate(zip(records, blobs, strict=True)):
        (tmp_path / f"{n}.jpg").write_bytes(b)
        title = f"product {n} {r.labels['articleType'][0]}" if titles else ""
        lines.append(f"p{n},{title},{n}.jpg,{r.labels['articleType'][0]}")
    for n in range(copies):
        img = Image.open(io.BytesIO(blobs[n])).convert("RGB")
        w, h = img.size
        img.crop((1, 1, w - 1, h - 2)).save(tmp_path / f"c{n}.jpg", quality=70)
        title = f"listing {n} again" if titles else ""
        lines.append(f"c{n},{title},c{n}.jpg,{records[n].labels['articleType'][0]}")
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "d.yaml").write_text(
        "name: d\ntable: t.csv\nid: id\ntext: title\nimage: image\naxes:\n  kind: single\n")
    return tmp_path / "d.yaml"


def test_retaken_photos_stay_on_one_side_of_the_split(tmp_path: Path, sample_manifest: Path) -> None:
    """The real image encoder: a photo shot again (other bytes) is grouped with its original when
    near-duplicate grouping is on, and only then."""
    manifest = _catalogue_with_retaken_photos(tmp_path, sample_manifest, copies=20)
    cfg = TrainConfig(calibration_fraction=0.25, validation_fraction=0.25)

    def sides(data) -> list[bool]:
        side = {int(i): name for name, idx in data.parts.items() for i in idx}
        ids = [r.id for r in data.records]
        return [side[ids.index(f"p{n}")] == side[ids.index(f"c{n}")] for n in range(20)]

    exact = prepare(manifest, cfg)  # titles: the default groups exact copies only
    assert exact.near_duplicates is None and not all(sides(exact))  # bytes differ: split apart
    near = prepare(manifest, replace(cfg, near_duplicate_similarity=0.9))
    assert all(sides(near))
    assert near.near_duplicates["joined"] >= 20 and near.near_duplicates["similarity"] == 0.9
    assert near.near_duplicates["chosen_by"] == "--near-duplicate-similarity"


def test_a_photo_only_catalogue_groups_retaken_photos_by_default(tmp_path: Path,
                                                                 sample_manifest: Path) -> None:
    """No titles: nothing but the photo tells two listings apart, so near-identical shots are one
    group unless the option says 0."""
    manifest = _catalogue_with_retaken_photos(tmp_path, sample_manifest, copies=20, titles=False)
    cfg = TrainConfig(calibration_fraction=0.25, validation_fraction=0.25)

    def sides(data) -> list[bool]:
        side = {int(i): name for name, idx in data.parts.items() for i in idx}
        ids = [r.id for r in data.records]
        return [side[ids.index(f"p{n}")] == side[ids.index(f"c{n}")] for n in range(20)]

    default = prepare(manifest, cfg)
    assert default.near_duplicates["similarity"] == 0.8
    assert default.near_duplicates["chosen_by"] == "photos without titles"
    assert all(sides(default))
    off = prepare(manifest, replace(cfg, near_duplicate_similarity=0.0))
    assert off.near_duplicates is None and not all(sides(off))
