"""Long texts and MiniLM's 64-token window (issue 12, point 6): what truncation hides, what the
windows (shared.ml.text_encoder.window_spans) read back, and what they cost.

No catalogue in ../shared/data has long texts, so this builds a probe, and it is only a probe:
``--n`` products of a catalogue (fashion-small by default), each text = one of four shop
boilerplate paragraphs (shipping, returns, care; ~90-110 MiniLM word pieces, drawn at random per
product) + the product's title. Truncated at 64 tokens, such a text never reaches its title. Also
measured: the title first and the boilerplate after it (a name + description: truncation keeps the
title), and three boilerplate paragraphs before the title (~300 pieces, past 4 windows: the
windows read the head and the tail).

For each kind of text: frozen MiniLM embeddings, truncated (``windows=1``, every model before the
option) and windowed (``--windows``), then one logistic regression per axis (--axes) fitted on 80%
of the products and scored on the other 20% (split by normalised title, so a title is never on both
sides); accuracy, and the encoder's wall time per text. Also each kind's held-out texts scored by
the regression fitted on the titles alone: a model trained on titles, served title + description.
About 20 min at --n 3000 on 2 CPU cores shared with a training job (--n 1000: a third of that).
Usage:
    python bench/long_text.py [--dataset ../shared/data/fashion-small/dataset.yaml] [--n 3000]
        [--windows 4] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

BOILERPLATE = [
    "Free standard shipping on every order over fifty dollars, delivered in three to five business "
    "days. Returns are accepted within thirty days of delivery if the item is unworn, unwashed and "
    "still has its original tags attached; refunds go back to the original payment method within "
    "seven business days. Sizes and colours may vary slightly from the pictures shown. Questions? "
    "Our customer care team answers by email and chat every day from nine in the morning to six in "
    "the evening.",
    "All orders are packed in recycled boxes and ship from our warehouse within one working day. "
    "Express delivery is available at checkout for an extra charge. If you are not completely "
    "satisfied, send the product back within fourteen days for an exchange or a full refund; "
    "return labels are printed from your account page. Please note that sale items can only be "
    "exchanged. Prices include all taxes and duties. Orders to remote areas may take up to two "
    "extra days, and we will email you as soon as your parcel leaves the warehouse.",
    "Care instructions: machine wash cold with similar colours, do not bleach, tumble dry low and "
    "iron on the reverse side. Store in a cool, dry place away from direct sunlight. Product "
    "photographs are for illustration only and the actual product may differ slightly due to "
    "lighting and screen settings. This item is covered by our standard six month warranty against "
    "manufacturing defects from the date of purchase. Keep your receipt: the warranty needs proof "
    "of purchase, and repairs are free of charge within that period.",
    "Cash on delivery is available for orders below two hundred dollars in most locations. You can "
    "track your parcel at any time with the link in your confirmation email. Orders placed after "
    "three in the afternoon are dispatched the next working day. Gift wrapping and a personal "
    "message can be added at checkout. Our secure payment page accepts all major credit and debit "
    "cards as well as wallets. Sign up for our newsletter to receive ten percent off your first "
    "order and early access to seasonal sales.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="../shared/data/fashion-small/dataset.yaml")
    ap.add_argument("--n", type=int, default=3000, help="products drawn from the catalogue")
    ap.add_argument("--axes", default="articleType,baseColour")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--C", type=float, default=4.0, help="the logistic regressions' C (one for all)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupShuffleSplit

    from shared.ml.dataset import load_manifest, load_records, normalise_title
    from shared.ml.quiet import quiet_third_party
    from shared.ml.text_encoder import TextEncoder

    quiet_third_party()
    torch.set_num_threads(args.threads)
    axes = args.axes.split(",")
    recs = [r for r in load_records(load_manifest(args.dataset))
            if r.text.strip() and all(r.labels.get(a) for a in axes)]
    rng = np.random.default_rng(args.seed)
    recs = [recs[i] for i in np.sort(rng.choice(len(recs), size=min(args.n, len(recs)), replace=False))]
    titles = [r.text.strip() for r in recs]
    pick = rng.integers(len(BOILERPLATE), size=len(recs))
    texts = {
        "title alone": titles,
        "boilerplate + title": [f"{BOILERPLATE[b]} {t}" for b, t in zip(pick, titles, strict=True)],
        "title + boilerplate": [f"{t}. {BOILERPLATE[b]}" for b, t in zip(pick, titles, strict=True)],
        "3 boilerplates + title": [" ".join([*(BOILERPLATE[(b + k) % 4] for k in range(3)), t])
                                   for b, t in zip(pick, titles, strict=True)],
    }
    encoders = {"truncated": TextEncoder(device="cpu"),
                f"{args.windows} windows": TextEncoder(device="cpu", windows=args.windows)}
    tok = encoders["truncated"].tokenizer
    pieces = {k: np.array([len(p) for p in tok(v, add_special_tokens=False, verbose=False)["input_ids"]])
              for k, v in texts.items()}
    boiler_pieces = [len(tok(b, add_special_tokens=False)["input_ids"]) for b in BOILERPLATE]

    groups = np.array([normalise_title(t) or t for t in titles])
    split = GroupShuffleSplit(1, test_size=0.2, random_state=args.seed)
    train, test = next(split.split(titles, groups=groups))
    report: dict = {"dataset": args.dataset, "n": len(recs), "n_train": int(len(train)),
                    "n_test": int(len(test)), "windows": args.windows, "threads": args.threads,
                    "boilerplate_pieces": boiler_pieces,
                    "pieces": {k: {"median": float(np.median(v)), "max": int(v.max())}
                               for k, v in pieces.items()},
                    "runs": []}
    print(f"{len(recs)} products ({len(train)} train / {len(test)} test, grouped by title); "
          f"boilerplate word pieces {boiler_pieces}")
    ys = {a: np.array([r.labels[a][0] for r in recs]) for a in axes}
    # Fitted on the titles alone: what a model trained on a catalogue of titles reads when the
    # worker serves it title + description (workers/tagging.py joins them).
    on_titles: dict = {}
    for kind, tx in texts.items():
        for mode, enc in encoders.items():
            if kind == "title alone" and mode != "truncated":
                continue  # every title fits one window: the same vectors (tests/shared/ml/test_long_texts.py)
            t0 = time.perf_counter()
            x = enc.encode(tx)
            per_text_ms = 1000 * (time.perf_counter() - t0) / len(tx)
            row = {"text": kind, "mode": "-" if kind == "title alone" else mode,
                   "per_text_ms": round(per_text_ms, 2)}
            for a in axes:
                clf = LogisticRegression(C=args.C, max_iter=2000).fit(x[train], ys[a][train])
                on_titles.setdefault(a, clf)  # the first kind is the titles alone
                row[a] = round(float((clf.predict(x[test]) == ys[a][test]).mean()), 4)
                row[f"{a} (fitted on titles)"] = round(float(
                    (on_titles[a].predict(x[test]) == ys[a][test]).mean()), 4)
            report["runs"].append(row)
            print(f"{kind:24} {row['mode']:10} " + " ".join(
                f"{a} {row[a]:.3f} (fitted on titles {row[f'{a} (fitted on titles)']:.3f})" for a in axes)
                + f"  {per_text_ms:.1f} ms/text (median {np.median(pieces[kind]):.0f} pieces)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
