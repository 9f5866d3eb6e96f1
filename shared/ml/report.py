"""Evaluating a loaded model on any dataset with the same axes (the command line prints the result)."""

from __future__ import annotations

from pathlib import Path

from shared.errors import ManifestError
from shared.ml.dataset import Record, load_blobs, load_manifest, load_records
from shared.ml.evaluation import evaluate_probs
from shared.ml.features import image_features, text_features
from shared.ml.head_training import Features
from shared.ml.labels import targets
from shared.ml.predictor import Tagger


def evaluate_dataset(
    tagger: Tagger, manifest_path: str | Path, modality: str = "both", show_progress: bool = True
) -> dict:
    """Score every row of the manifest (no split); the JSON shape of ``tagger evaluate``."""
    manifest = load_manifest(manifest_path)
    if not any(a.name in manifest.axes for a in tagger.axes):
        raise ManifestError(
            f"{manifest_path}: field 'axes': none of {sorted(manifest.axes)} is an axis of model "
            f"{tagger.version} ({sorted(a.name for a in tagger.axes)})"
        )
    records = load_records(manifest)
    # Text only: the photos are neither read nor encoded.
    blobs = [None] * len(records) if modality == "text" else load_blobs(manifest, records)
    return evaluate_records(tagger, manifest.name, records, blobs, modality, show_progress)


def evaluate_records(
    tagger: Tagger, name: str, records: list[Record], blobs: list[bytes | None],
    modality: str = "both", show_progress: bool = False,
) -> dict:
    """Per-axis metrics of ``tagger`` on labelled records, for the axes both sides know. Only the
    inputs ``modality`` uses are encoded: ``text`` encodes no photo, ``image`` no title."""
    labelled = {axis for r in records for axis, v in r.labels.items() if v}
    shared_axes = [a for a in tagger.axes if a.name in labelled]
    texts = [r.text if modality != "image" else "" for r in records]
    if modality == "text":
        blobs = [None] * len(records)
    tx, tm = text_features(tagger.text_encoder, texts, tagger.cache, show_progress)
    ix, im = image_features(tagger.image_encoder, blobs, tagger.cache, show_progress)
    lex = tagger.lexical(texts)  # None for a model without the lexical channel
    f = Features(tx, tm, ix, im, *(lex or (None, None))).only(modality)
    lex = None if f.lex_ids is None else (f.lex_ids, f.lex_counts)
    probs = tagger.probabilities(f.text, f.text_mask, f.image, f.image_mask, lexical=lex,
                                 offsets=tagger.offsets(texts))  # "" titles (image only) get none
    y = {a.name: targets(records, a) for a in shared_axes}
    # What the product applies: out-of-domain items abstain, as in the predictor.
    novelty = tagger.novelty(texts, f.text, f.text_mask, f.image, f.image_mask)
    abstain = novelty.novel if novelty is not None else None
    withheld = tagger.evidence(f.text, f.text_mask, f.image, f.image_mask, lex).withheld()
    return {
        "model": tagger.version,
        "dataset": name,
        "modality": modality,
        "n": len(records),
        "abstentions": int(abstain.sum()) if abstain is not None else None,
        "axes": evaluate_probs(shared_axes, probs, y, tagger.consistency, tagger.axes, abstain,
                               withheld),
    }
