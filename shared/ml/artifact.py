"""Model artifacts: ``manifest.json`` + ``head.safetensors`` (+ ``text_adapter.safetensors``)
(+ ``novelty.safetensors``, the novelty guard's centroids: :mod:`shared.ml.novelty`)
(+ ``experts.safetensors``, the text experts' vocabulary and coefficients: :mod:`shared.ml.experts`)
(+ ``image_tail.safetensors``, the image backbone's tuned tail: :mod:`shared.ml.image_tuning`).

Never pickle: weights are safetensors, everything else is JSON. The manifest's names, format and
schema live in the torch-free :mod:`shared.ml.manifest`; this module adds the weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file as load_arrays
from safetensors.numpy import save_file as save_arrays
from safetensors.torch import load_file, save_file

from shared.errors import ArtifactError
from shared.ml.manifest import ADAPTER, FORMAT, HEAD, IMAGE_TAIL, MANIFEST, parse_manifest, read_manifest

__all__ = ["ADAPTER", "EXPERTS", "FORMAT", "HEAD", "IMAGE_TAIL", "MANIFEST", "NOVELTY", "Artifact",
           "load_artifact", "save_artifact"]

NOVELTY = "novelty.safetensors"  # optional: models trained before the guard have none
EXPERTS = "experts.safetensors"  # optional: only models trained with text experts


@dataclass
class Artifact:
    """A model in memory: the manifest's JSON document (checked by shared.ml.manifest on load and
    before saving) and the weights it names. ``novelty`` (numpy: the guard is torch-free) goes
    with the manifest's ``novelty`` key; both or neither. ``experts`` (numpy) likewise goes with
    the ``experts`` key, and ``image_tail`` (the backbone's tuned tensors) with ``encoders.image.tail``."""

    manifest: dict
    head: dict[str, torch.Tensor]
    adapter: dict[str, torch.Tensor] | None
    novelty: dict[str, np.ndarray] | None = None
    experts: dict[str, np.ndarray] | None = None
    image_tail: dict[str, torch.Tensor] | None = None

    @property
    def version(self) -> str:
        return self.manifest["version"]


def save_artifact(out_dir: str | Path, artifact: Artifact) -> Path:
    """Write the files; weights as given: fp32 (scores must round-trip), except the head's
    lexical tables, which the trainer rounds to and stores in fp16 (``FusionHead.export_state``).
    The manifest is checked against the schema first: nothing is written for one no reader accepts."""
    out = Path(out_dir)
    files = ([HEAD] + [ADAPTER] * (artifact.adapter is not None) + [NOVELTY] * (artifact.novelty is not None)
             + [EXPERTS] * (artifact.experts is not None) + [IMAGE_TAIL] * (artifact.image_tail is not None))
    manifest = {**artifact.manifest, "format": FORMAT, "files": files}
    parse_manifest(manifest, str(out / MANIFEST))  # never write what no reader would accept
    if (artifact.novelty is None) != (manifest.get("novelty") is None):
        raise ArtifactError(f"{out / MANIFEST}: the 'novelty' key and {NOVELTY} go together")
    if (artifact.experts is None) != (manifest.get("experts") is None):
        raise ArtifactError(f"{out / MANIFEST}: the 'experts' key and {EXPERTS} go together")
    if (artifact.image_tail is None) != (_tail_doc(manifest) is None):
        raise ArtifactError(f"{out / MANIFEST}: the 'encoders.image.tail' key and {IMAGE_TAIL} go together")
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in artifact.head.items()}, str(out / HEAD))
    if artifact.adapter is not None:
        save_file({k: v.contiguous() for k, v in artifact.adapter.items()}, str(out / ADAPTER))
    if artifact.novelty is not None:
        save_arrays({k: np.ascontiguousarray(v) for k, v in artifact.novelty.items()}, str(out / NOVELTY))
    if artifact.experts is not None:
        save_arrays({k: np.ascontiguousarray(v) for k, v in artifact.experts.items()}, str(out / EXPERTS))
    if artifact.image_tail is not None:
        save_file({k: v.contiguous() for k, v in artifact.image_tail.items()}, str(out / IMAGE_TAIL))
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return out


def load_artifact(model_dir: str | Path) -> Artifact:
    """Read and sanity-check an artifact directory; every failure names the file and reason."""
    d = Path(model_dir)
    spec = read_manifest(d)
    head = _load(d / HEAD)
    adapter = _load(d / ADAPTER) if spec.has_adapter else None
    novelty = _load(d / NOVELTY, load_arrays) if NOVELTY in spec.files else None
    experts = _load(d / EXPERTS, load_arrays) if EXPERTS in spec.files else None
    if (experts is None) != (spec.to_json().get("experts") is None):
        raise ArtifactError(f"{d / MANIFEST}: the 'experts' key and {EXPERTS} go together")
    image_tail = _load(d / IMAGE_TAIL) if IMAGE_TAIL in spec.files else None
    if (image_tail is None) != (spec.encoders.image.tail is None):
        raise ArtifactError(f"{d / MANIFEST}: the 'encoders.image.tail' key and {IMAGE_TAIL} go together")
    return Artifact(manifest=spec.to_json(), head=head, adapter=adapter, novelty=novelty, experts=experts,
                    image_tail=image_tail)


def _tail_doc(manifest: dict) -> dict | None:
    """The manifest's ``encoders.image.tail`` (None: the pretrained backbone)."""
    return ((manifest.get("encoders") or {}).get("image") or {}).get("tail")


def _load(path: Path, reader=load_file) -> dict:
    if not path.is_file():
        raise ArtifactError(f"{path}: not found")
    try:
        return reader(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: corrupt or truncated weights: {exc}") from None
