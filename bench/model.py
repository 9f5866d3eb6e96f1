"""Model inference throughput on this machine: items/s of ``Tagger.predict`` on sample products.

Not a test: prints numbers for docs/MODEL.md and docs/BENCHMARKS.md. The embedding cache is off,
so every item is really encoded (photos decoded from their JPEG bytes each time: on CUDA with
torchvision.io on the GPU, shared/ml/decode.py). On CUDA the encoders run under bf16 autocast
(shared/ml/device.py). One line per batch size; the last line, for the last (or only) batch size,
reads ``items_per_s=X text_only_items_per_s=Y``.

    .venv/bin/python -m bench.model --batch 32
    .venv/bin/python -m bench.model --device cuda --batch 32,64,128 --n 1024
"""

from __future__ import annotations

import argparse
import time

import torch

from shared.config import SAMPLE_MANIFEST, get_settings
from shared.ml.dataset import load_manifest, load_records, read_images
from shared.ml.predictor import Item, Tagger


def batch_sizes(text: str) -> list[int]:
    """``"32,64"`` -> [32, 64]; every size at least 1."""
    sizes = [int(s) for s in text.split(",") if s.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers, got {text!r}")
    return sizes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=192, help="items per measurement")
    ap.add_argument("--batch", type=batch_sizes, default=[32],
                    help="items per predict() call; a comma list measures each")
    ap.add_argument("--model", default=None, help="model directory (default: shipped)")
    ap.add_argument("--device", default=None, help="'cpu', 'cuda[:N]' or 'auto' (default: TAGGER_DEVICE)")
    args = ap.parse_args()
    if args.n < 1:
        ap.error("--n must be at least 1")
    settings = get_settings()
    if args.device:
        settings = settings.model_copy(update={"device": args.device, "encode_batch_size": max(args.batch)})
    tagger = Tagger.load(args.model, settings=settings, cache=None)
    m = load_manifest(SAMPLE_MANIFEST)
    recs = load_records(m)
    imgs = read_images(m, [r.image_ref for r in recs])
    base = [Item(r.text, imgs[r.image_ref] if r.image_ref else None) for r in recs]
    items = (base * (args.n // len(base) + 1))[: args.n]
    device = tagger.device
    gpu_decode = getattr(tagger.image_encoder, "_tensor_decoder", None) is not None
    print(f"model={tagger.version} device={device} threads={torch.get_num_threads()} n={args.n} "
          f"amp={'bf16' if device.type == 'cuda' else 'off (fp32)'} "
          f"decode={'torchvision.io on ' + str(device) if gpu_decode else 'PIL on CPU threads'}")
    rates: dict[str, float] = {}
    for batch in args.batch:
        tagger.predict(items[:batch])  # warm-up at this size (kernel choice, allocator)
        for name, batch_items in (("both", items), ("text_only", [Item(it.text, None) for it in items])):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            for s in range(0, len(batch_items), batch):
                tagger.predict(batch_items[s : s + batch])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            rates[name] = len(batch_items) / (time.perf_counter() - t0)
        print(f"batch={batch} items_per_s={rates['both']:.1f} text_only_items_per_s={rates['text_only']:.1f}")
    print(f"items_per_s={rates['both']:.1f} text_only_items_per_s={rates['text_only']:.1f}")


if __name__ == "__main__":
    main()
