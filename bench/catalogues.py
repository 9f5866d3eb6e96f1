"""The tagger beside the plain baseline on every catalogue in ``../shared/data``: same rows, same
split, same auto rule (target precision with its 95% lower bound on cross-fitted scores).

For each catalogue it trains the model as ``tagger train`` would with that catalogue's recipe
(below: the command's own defaults, plus the options docs/MODEL.md gives for it), fits the
baseline (TF-IDF character 1-4-grams + logistic regression, ``bench/baseline.py``) on the same
training part, and scores both on the same held-out part, never trained or tuned on. Prints a
markdown table for docs/MODEL.md and writes every report as JSON. Not a test. Usage:
    python -m bench.catalogues [--data ../shared/data] [--only grocery-store ...] \\
        [--out runs/catalogues] [--baseline-folds 5] [--set image_tail_epochs=0 ...]
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.baseline import baseline_report
from cli.model import train as tagger_train
from cli.model import train_config
from shared.ml.dataset import load_manifest
from shared.ml.evaluation import headline
from shared.ml.train_config import TrainConfig
from shared.ml.training import prepare, train_prepared


@dataclass(frozen=True)
class Recipe:
    """How a catalogue is trained here (``tagger train``'s defaults plus these options), and what
    its held-out part is."""

    options: dict = field(default_factory=dict)  # tagger train options, by parameter name
    official_split: str | None = None  # a column naming the official split: its "test" is held out
    note: str = ""

    @property
    def cfg(self) -> TrainConfig:
        return train_config(**self.options)


RECIPES = {
    "fashion-small": Recipe(note="tagger train's defaults"),
    "grocery-store": Recipe(official_split="split",
                            note="photos only, so tagger train's defaults group near-identical "
                            "shots (0.8) and tune the image tail (5 epochs); the official test "
                            "split held out"),
    "product1m-zh-dev": Recipe(note="tagger train's defaults (the titles choose usem3)"),
}


def official_test_ids(manifest_path: Path, column: str) -> set[str]:
    """Ids of the rows whose ``column`` says ``test``."""
    m = load_manifest(manifest_path)
    with (m.base_dir / m.table).open(newline="", encoding="utf-8") as f:
        return {row[m.id] for row in csv.DictReader(f) if row.get(column) == "test"}


def _num(v: float | int | None) -> str:
    return "—" if v is None else f"{v:.3f}".lstrip("0")


def _cell(m: dict | None, key: str) -> str:
    return _num(None if m is None else m.get(key))


def _auto(m: dict | None) -> str:
    if m is None or m.get("auto_precision") is None:
        return "—"
    return f"{_cell(m, 'auto_precision')} ({_cell(m, 'auto_precision_lower')})"


def table(results: list[dict]) -> str:
    """One markdown row per catalogue and axis: model / baseline accuracy (micro-F1 for
    multi-label), auto precision (its 95% lower bound on the held-out part) and auto coverage."""
    lines = ["| catalogue | axis | n | accuracy or micro-F1: model / baseline | auto precision (bound): "
             "model / baseline | auto coverage: model / baseline |", "|---|---|---:|---|---|---|"]
    for r in results:
        model = r["model"]["metrics"]["modalities"]["both"]
        base = r["baseline"]["axes"] or {}
        for axis, m in model.items():
            if not isinstance(m, dict) or "n" not in m:
                continue
            b = base.get(axis)
            mh, bh = headline(m), headline(b) if b else None
            win = "**" if bh is None or (mh is not None and mh >= bh) else ""
            lines.append(
                f"| {r['catalogue']} | {axis} | {m['n']} | {win}{_num(mh)}{win} / {_num(bh)} | "
                f"{_auto(m)} / {_auto(b)} | {_cell(m, 'auto_coverage')} / {_cell(b, 'auto_coverage')} |")
    return "\n".join(lines)


def _reusable(model_dir: Path, fingerprint: str, cfg: TrainConfig) -> dict | None:
    """The model already in ``model_dir`` when it was trained on these very records with this
    recipe (a run interrupted after its training, or a training run by hand), else None."""
    path = model_dir / "manifest.json"
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    trained = manifest.get("training", {})
    stored, want = trained.get("config") or {}, json.loads(json.dumps(asdict(cfg)))
    default = json.loads(json.dumps(asdict(TrainConfig())))
    def same(have: dict, want: dict, default: dict) -> bool:
        """A key newer than the model was trained with its default then; a value the recipe
        leaves to the catalogue (None) is whatever training chose (the fingerprint pins the data)."""
        return all(same(have.get(k) or {}, v, default.get(k) or {}) if isinstance(v, dict)
                   else v is None or have.get(k, default.get(k)) == v for k, v in want.items())

    if trained.get("fingerprint") != fingerprint or not same(stored, want, default):
        return None
    print(f"   reusing {manifest['version']} from {model_dir}", flush=True)
    return manifest


def _override(text: str) -> tuple[str, object]:
    """``name=value`` from the command line: the value as JSON (numbers, true/false), else text."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise SystemExit(f"--set: expected OPTION=VALUE, not {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data",
                    help="folder of catalogues, each with a dataset.yaml (default: ../shared/data)")
    ap.add_argument("--only", nargs="*", default=None, help="catalogue names to run (default: all)")
    ap.add_argument("--out", type=Path, default=Path("runs/catalogues"), help="models and reports go here")
    ap.add_argument("--reuse", action="store_true",
                    help="keep a model already under --out trained on the same records and recipe")
    ap.add_argument("--baseline-folds", type=int, default=5,
                    help="the baseline's calibration folds (the model's are its recipe's, 5)")
    ap.add_argument("--skip-baseline", action="store_true",
                    help="train the models only (the baseline's rows and split do not change with "
                    "the model's recipe: reuse a table made before)")
    ap.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                    help="override a recipe option (a tagger train parameter name), e.g. "
                    "image_tail_epochs=0 to measure a recipe without one of its options")
    args = ap.parse_args()
    overrides = dict(_override(o) for o in args.set)
    unknown = set(overrides) - set(inspect.signature(tagger_train).parameters)
    if unknown:
        raise SystemExit(f"--set: not tagger train options: {', '.join(sorted(unknown))}")
    manifests = sorted(p for p in args.data.glob("*/dataset.yaml")
                       if args.only is None or p.parent.name in args.only)
    if not manifests:
        raise SystemExit(f"--data: no */dataset.yaml under {args.data}"
                         + (f" named {args.only}" if args.only else ""))
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for path in manifests:
        name = path.parent.name
        recipe = RECIPES.get(name, Recipe(note="tagger train's defaults"))
        t0 = time.perf_counter()
        holdout = official_test_ids(path, recipe.official_split) if recipe.official_split else None
        cfg = Recipe({**recipe.options, **overrides}).cfg
        print(f"== {name}: {recipe.note or 'recipe'}", flush=True)
        data = prepare(path, cfg, holdout, show_progress=True)
        model = _reusable(args.out / name, data.fingerprint, cfg) if args.reuse else None
        if model is None:
            model = train_prepared(data, args.out / name, cfg=cfg, show_progress=True,
                                   scores_out=args.out / f"{name}-scores.npz")
        base = {"axes": None} if args.skip_baseline else baseline_report(data, args.baseline_folds, cfg)
        results.append({"catalogue": name, "note": recipe.note, "model": model, "baseline": base,
                        "seconds": round(time.perf_counter() - t0, 1)})
        (args.out / f"{name}.json").write_text(json.dumps(results[-1], indent=2, ensure_ascii=False) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
