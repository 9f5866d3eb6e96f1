"""The inference API: a batch of items (text and/or image bytes) in, ranked tags per axis out."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from shared.config import Settings, get_settings
from shared.errors import ArtifactError
from shared.ml.artifact import Artifact, load_artifact
from shared.ml.cache import EmbeddingCache
from shared.ml.calibration import probabilities
from shared.ml.consistency import Consistency
from shared.ml.evidence import Evidence, alone_axes, input_evidence, trusted_axes
from shared.ml.experts import TextExperts
from shared.ml.features import text_features
from shared.ml.head import FusionHead, HeadConfig, HeadEnsemble, build
from shared.ml.image_encoder import ImageEncoder, ImagePreprocessing, PreparedImages
from shared.ml.labels import Axis
from shared.ml.lexical import hash_ngrams
from shared.ml.manifest import EncodersSpec
from shared.ml.novelty import NoveltyGuard, NoveltyScores
from shared.ml.text_encoder import TextEncoder, build_text_encoder
from shared.ml.text_encoder_use import UseTextEncoder
from shared.stopwatch import Stopwatch

AUTO, REVIEW = "auto", "review"
log = logging.getLogger("shared.ml.predictor")
_UNGUARDED: set[str] = set()  # versions already logged as having no novelty guard


@dataclass
class Item:
    """What the model reads about one product. Either part may be missing."""

    text: str = ""
    image: bytes | None = None


@dataclass
class TagScore:
    value: str
    score: float
    status: str  # auto | review


@dataclass
class Prediction:
    """Ranked values per axis; ``image_error`` says why the photo was not used, if it was not.
    ``novelty``: >= 1.0 means out of the model's domain (then every tag is ``review`` and
    ``abstain_reason`` says why); None when the model has no novelty guard or the item no input."""

    tags: dict[str, list[TagScore]] = field(default_factory=dict)
    modalities: tuple[str, ...] = ()
    image_error: str | None = None
    error: str | None = None
    novelty: float | None = None
    abstain_reason: str | None = None
    contradictions: list[str] = field(default_factory=list)  # axes whose auto tags contradicted
    # Axes whose title and photo alone would each have applied a different value: then no tag of
    # the item is auto (shared.ml.evidence).
    disagreements: list[str] = field(default_factory=list)
    # Axes the item's one input may not auto-apply alone (shared.ml.evidence).
    one_input: list[str] = field(default_factory=list)
    evidence: dict[str, dict] = field(default_factory=dict)  # per axis: shares, single-input values

    def top(self, axis: str) -> TagScore | None:
        ranked = self.tags.get(axis) or []
        return ranked[0] if ranked else None


def build_head(manifest: dict, state: dict[str, torch.Tensor] | None = None) -> FusionHead | HeadEnsemble:
    head = build(HeadConfig(**manifest["head"]["config"]))
    if state is not None:
        try:
            head.load_state_dict(state)
        except RuntimeError as exc:
            raise ArtifactError(f"head weights do not match the manifest's head config: {exc}") from None
    return head.eval()


def load_encoders(
    spec: EncodersSpec, adapter: dict[str, torch.Tensor] | None, settings: Settings, version: str,
    image_tail: dict[str, torch.Tensor] | None = None,
) -> tuple[TextEncoder | UseTextEncoder, ImageEncoder]:
    """The encoders a model was trained with, built from the settings; ArtifactError if the ones
    here are not those (other weights, or an adapter or image tail that is not the trained one).
    The text encoder is the kind the manifest records, whatever TAGGER_TEXT_ENCODER says."""
    t, i = spec.text, spec.image
    text = build_text_encoder(t.kind, settings, max_length=t.max_length, adapter=adapter, lora=t.lora,
                              include_base=t.include_base, windows=t.windows)
    if text.base_id != t.base_id:
        raise ArtifactError(
            f"model {version} needs text encoder {t.base_id}, but {text.path} is {text.base_id}")
    if t.id and text.encoder_id != t.id:
        raise ArtifactError(f"text adapter of {version} does not match its manifest "
                            f"({text.encoder_id} != {t.id}): corrupt artifact")
    pre = {k: tuple(v) if k in ("mean", "std") else v for k, v in i.preprocessing.items()}
    try:
        preprocessing = ImagePreprocessing(**pre)
    except TypeError as exc:
        raise ArtifactError(f"model {version}: image preprocessing {i.preprocessing} is not one this "
                            f"code can apply ({exc})") from None
    # A tuned tail's digest is part of the id: a tail that is not the trained one fails below.
    image = ImageEncoder.from_settings(settings, arch=i.arch, preprocessing=preprocessing, tail=image_tail)
    if image.encoder_id != i.id:
        raise ArtifactError(
            f"model {version} needs image encoder {i.id}, but the weights here give {image.encoder_id}")
    return text, image


class Tagger:
    """A loaded model: encoders (checked against the artifact), fusion head, calibrated axes."""

    def __init__(
        self, artifact: Artifact, text_encoder: TextEncoder, image_encoder: ImageEncoder,
        cache: EmbeddingCache | None = None,
    ) -> None:
        self.artifact = artifact
        self.manifest = artifact.manifest
        self.version: str = artifact.version
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self.cache = cache
        self.axes = [Axis.from_json(n, d) for n, d in self.manifest["axes"].items()]
        self.head = build_head(self.manifest, artifact.head).to(text_encoder.device)
        self.device = text_encoder.device
        self.guard = self._guard()
        doc = self.manifest.get("consistency")  # older models have none: axes decide alone
        self.consistency = Consistency.from_json(doc) if doc else None
        # Axes whose title and photo may disagree (shared.ml.evidence); none for older models.
        self.trusted = trusted_axes(self.manifest.get("disagreement"))
        self.alone = alone_axes(self.manifest.get("disagreement"))
        # The lexical channel (shared.ml.lexical): 0 buckets for models without it.
        self.lexical_buckets: int = self.head.cfg.lexical_buckets
        # The text experts (shared.ml.experts): None for models without them.
        doc = self.manifest.get("experts")
        self.experts = (TextExperts.from_artifact(doc, artifact.experts)
                        if doc is not None and artifact.experts is not None else None)

    def _guard(self) -> NoveltyGuard | None:
        """The artifact's novelty guard; older artifacts have none, and then nothing abstains."""
        doc = self.manifest.get("novelty")
        if doc is not None and self.artifact.novelty is not None:
            return NoveltyGuard.from_artifact(doc, self.artifact.novelty)
        if self.version not in _UNGUARDED:
            _UNGUARDED.add(self.version)
            log.warning("model %s has no novelty guard: out-of-domain items are not detected and "
                        "can get auto tags (retrain to add one)", self.version)
        return None

    @classmethod
    def load(
        cls, model_dir: str | Path | None = None, settings: Settings | None = None,
        cache: EmbeddingCache | None = None,
    ) -> Tagger:
        """Load an artifact (the shipped default when ``model_dir`` is None) and its encoders;
        fails with ArtifactError if the encoders here are not the ones it was trained with."""
        s = settings or get_settings()
        artifact = load_artifact(model_dir or s.model_dir)
        spec = EncodersSpec.model_validate(artifact.manifest["encoders"])  # checked by load_artifact
        text, image = load_encoders(spec, artifact.adapter, s, artifact.version, artifact.image_tail)
        return cls(artifact, text, image, cache)

    def lexical(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
        """The texts' hashed character n-grams (ids, counts) for a model with the lexical
        channel; None for one without. Pass them to :meth:`probabilities` and :meth:`evidence`."""
        if not self.lexical_buckets:
            return None
        return hash_ngrams(texts, self.lexical_buckets)

    def _lexical_arrays(self, lexical: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, ...]:
        if not self.lexical_buckets:
            return ()
        if lexical is None:
            raise ValueError(f"model {self.version} reads the titles' character n-grams: pass "
                             "lexical=tagger.lexical(texts) with the features")
        return lexical

    def offsets(self, texts: list[str]) -> dict[str, np.ndarray] | None:
        """What the text experts add to the head's logits, for a model with them (None without).
        Pass them to :meth:`probabilities`; an empty title (a photo-only item) gets none."""
        return None if self.experts is None else self.experts.offsets(texts)

    @torch.inference_mode()
    def probabilities(
        self, text: np.ndarray, text_mask: np.ndarray, image: np.ndarray, image_mask: np.ndarray,
        batch_size: int = 2048, lexical: tuple[np.ndarray, np.ndarray] | None = None,
        offsets: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Calibrated per-axis probabilities for ready-made features (and, for a model with the
        lexical channel, ``lexical``: the texts' n-grams from :meth:`lexical`; for one with text
        experts, ``offsets`` from :meth:`offsets`)."""
        lex = self._lexical_arrays(lexical)
        if self.experts is not None and offsets is None:
            raise ValueError(f"model {self.version} adds its text experts' scores: pass "
                             "offsets=tagger.offsets(texts) with the features")
        out: dict[str, list[np.ndarray]] = {a.name: [] for a in self.axes}
        for s in range(0, len(text), batch_size):
            sl = slice(s, s + batch_size)
            logits = self.head(*(torch.from_numpy(a[sl]).to(self.device)
                                 for a in (text, text_mask, image, image_mask, *lex)))
            for a in self.axes:
                out[a.name].append(logits[a.name].float().cpu().numpy())
        logits = {a.name: np.concatenate(out[a.name]) if out[a.name] else np.zeros((0, len(a.values)))
                  for a in self.axes}
        if self.experts is not None:
            logits = {name: lg + offsets[name] for name, lg in logits.items()}
        return {a.name: probabilities(a, logits[a.name]) for a in self.axes}

    def evidence(self, text: np.ndarray, text_mask: np.ndarray, image: np.ndarray,
                 image_mask: np.ndarray, lexical: tuple[np.ndarray, np.ndarray] | None = None,
                 ) -> Evidence:
        """Input shares and single-input predictions of ready-made features (shared.ml.evidence);
        evaluation withholds the same disagreements as :meth:`predict`."""
        lex = self._lexical_arrays(lexical)
        return input_evidence(self.head, self.axes, text, text_mask, image, image_mask, self.device,
                              self.trusted, self.alone, *lex)

    def features(self, items: list[Item], watch: Stopwatch | None = None,
                 images: PreparedImages | None = None) -> tuple[np.ndarray, ...]:
        """Text and image features; ``watch`` gets "decode" (photos) and "encode" (both encoders).
        ``images``: the items' photos already prepared (:meth:`ImageEncoder.prepare_batch`, e.g. on a
        stage thread while the previous sub-batch ran); then only the backbone runs here."""
        watch = watch or Stopwatch()
        texts = [it.text or "" for it in items]
        with watch.stage("encode"):
            tx, tm = text_features(self.text_encoder, texts, self.cache)
        photos = [it.image for it in items]
        ix, im = np.zeros((len(items), self.image_encoder.dim), np.float32), np.zeros(len(items), bool)
        errors: list[str | None] = [None] * len(items)
        if images is not None:
            if len(images.errors) != len(items):
                raise ValueError(f"{len(images.errors)} prepared photos for {len(items)} items")
            with watch.stage("encode"):
                ix, errs = self.image_encoder.embed(images)
        elif any(photos):
            ix, errs = self.image_encoder.encode(photos, watch)
        else:
            return tx, tm, ix, im, errors
        im = np.array([e is None for e in errs])
        errors = [e if photos[k] is not None else None for k, e in enumerate(errs)]
        return tx, tm, ix, im, errors

    def predict(self, items: list[Item], top_k: int = 3, watch: Stopwatch | None = None,
                images: PreparedImages | None = None) -> list[Prediction]:
        """Tags for each item. An item with a broken image is tagged from its text (and the
        reason kept in ``image_error``); one with neither gets ``error`` and no tags. ``watch``
        gets the seconds of "decode", "encode" and "head" (fusion head, calibration, ranking).
        ``images``: the items' photos already prepared (see :meth:`features`)."""
        if not items:
            return []
        watch = watch or Stopwatch()
        tx, tm, ix, im, errors = self.features(items, watch, images)
        texts = [it.text or "" for it in items]
        with watch.stage("encode"):
            lex = self.lexical(texts)
            offsets = self.offsets(texts)
        with watch.stage("head"):
            probs = self.probabilities(tx, tm, ix, im, lexical=lex, offsets=offsets)
            preds = self._rank(items, probs, tm, im, errors, top_k, self.evidence(tx, tm, ix, im, lex))
            return self._abstain(preds, self.novelty(texts, tx, tm, ix, im))

    def novelty(self, texts: list[str], tx: np.ndarray, tm: np.ndarray, ix: np.ndarray,
                im: np.ndarray) -> NoveltyScores | None:
        """Novelty of ready-made features (``texts``: the titles ``tx`` came from); None without
        a guard. Evaluation counts abstentions with it next to :meth:`probabilities`."""
        if self.guard is None:
            return None
        return self.guard.score(texts, tx, tm, ix, im, self.text_encoder.tokenizer)

    @staticmethod
    def _abstain(preds: list[Prediction], nov: NoveltyScores | None) -> list[Prediction]:
        """Out-of-domain items keep their ranked values, but none of them is ``auto``."""
        if nov is None:
            return preds
        for p, score, reason in zip(preds, nov.score, nov.reasons, strict=True):
            if np.isnan(score) or p.error:
                continue
            p.novelty = round(float(score), 4)
            if score >= 1.0:
                p.abstain_reason = reason
                for ranked in p.tags.values():
                    for t in ranked:
                        t.status = REVIEW
        return preds

    def _rank(self, items: list[Item], probs: dict[str, np.ndarray], tm: np.ndarray, im: np.ndarray,
              errors: list[str | None], top_k: int, ev: Evidence) -> list[Prediction]:
        """Top-k values per axis with auto/review status, from calibrated probabilities; an axis
        whose title and photo alone disagree on some axis applies nothing (``disagreements``)."""
        disagree = ev.disagreements()
        held, one = ev.held(), ev.one_input()
        preds = []
        for k in range(len(items)):
            p = Prediction(image_error=errors[k],
                           modalities=tuple(m for m, ok in (("text", tm[k]), ("image", im[k])) if ok))
            if not p.modalities:
                p.error = "no usable input: the title is empty and " + (errors[k] or "there is no image")
                preds.append(p)
                continue
            for a in self.axes:
                row = probs[a.name][k]
                order = np.argsort(-row)[:top_k]
                p.tags[a.name] = [
                    TagScore(a.values[j], round(float(row[j]), 6),
                             AUTO if row[j] >= a.threshold(a.values[j]) else REVIEW)
                    for j in order
                ]
                p.evidence[a.name] = ev.item(k, a)
                if a.name in disagree and disagree[a.name][k]:
                    p.disagreements.append(a.name)
                if one[a.name][k]:
                    p.one_input.append(a.name)
                if held[k] or one[a.name][k]:
                    for t in p.tags[a.name]:
                        t.status = REVIEW
            preds.append(p)
        return self._consistent(preds)

    def _consistent(self, preds: list[Prediction]) -> list[Prediction]:
        """Joint decoding (shared.ml.consistency): axes whose auto tags contradict another auto
        tag of the item go to review, named in ``contradictions``. Reads the statuses as the
        steps before left them; the evaluation calls the same ``Consistency.resolve``."""
        if self.consistency is None or not preds:
            return preds
        auto = {}
        for a in self.axes:
            index = {v: j for j, v in enumerate(a.values)}
            auto[a.name] = np.zeros((len(preds), len(a.values)), bool)
            for k, p in enumerate(preds):
                for t in p.tags.get(a.name, []):
                    auto[a.name][k, index[t.value]] = t.status == AUTO
        _, contradicted = self.consistency.resolve(self.axes, auto)
        for name, hit in contradicted.items():
            for k in np.nonzero(hit)[0]:
                preds[k].contradictions.append(name)
                for t in preds[k].tags[name]:
                    t.status = REVIEW
        return preds
