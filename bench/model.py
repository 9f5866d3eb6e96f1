"""Model inference throughput on this machine: items/s of ``Tagger.predict`` on sample products.

Not a test: prints numbers for docs/MODEL.md and docs/BENCHMARKS.md. The embedding cache is off,
so every item is really encoded. Last line: ``items_per_s=X text_only_items_per_s=Y``.
"""

from __future__ import annotations

import argparse
import time

import torch

from shared.config import SAMPLE_MANIFEST, get_settings
from shared.ml.dataset import load_manifest, load_records, read_images
from shared.ml.predictor import Item, Tagger


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=192, help="items per measurement")
    ap.add_argument("--batch", type=int, default=32, help="items per predict() call")
    ap.add_argument("--model", default=None, help="model directory (default: shipped)")
    args = ap.parse_args()
    tagger = Tagger.load(args.model, settings=get_settings(), cache=None)
    m = load_manifest(SAMPLE_MANIFEST)
    recs = load_records(m)
    imgs = read_images(m, [r.image_ref for r in recs])
    items = [Item(r.text, imgs[r.image_ref]) for r in recs]
    items = (items * (args.n // len(items) + 1))[: args.n]
    tagger.predict(items[: args.batch])  # warm-up
    rates = {}
    for name, batch_items in (
        ("both", items),
        ("text_only", [Item(it.text, None) for it in items]),
    ):
        t0 = time.perf_counter()
        for s in range(0, len(batch_items), args.batch):
            tagger.predict(batch_items[s : s + args.batch])
        rates[name] = len(batch_items) / (time.perf_counter() - t0)
    print(f"model={tagger.version} device={tagger.device} threads={torch.get_num_threads()} "
          f"batch={args.batch} n={args.n}")
    print(f"items_per_s={rates['both']:.1f} text_only_items_per_s={rates['text_only']:.1f}")


if __name__ == "__main__":
    main()
