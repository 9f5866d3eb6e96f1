"""Model artifacts: ``manifest.json`` + ``head.safetensors`` (+ ``text_adapter.safetensors``).

Never pickle: weights are safetensors, everything else is JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from shared.errors import ArtifactError

FORMAT = 1
MANIFEST = "manifest.json"
HEAD = "head.safetensors"
ADAPTER = "text_adapter.safetensors"


@dataclass
class Artifact:
    manifest: dict
    head: dict[str, torch.Tensor]
    adapter: dict[str, torch.Tensor] | None

    @property
    def version(self) -> str:
        return self.manifest["version"]


def save_artifact(out_dir: str | Path, artifact: Artifact) -> Path:
    """Write the three files; weights in fp32 (the head is small, and scores must round-trip)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in artifact.head.items()}, str(out / HEAD))
    files = [HEAD]
    if artifact.adapter is not None:
        save_file({k: v.contiguous() for k, v in artifact.adapter.items()}, str(out / ADAPTER))
        files.append(ADAPTER)
    manifest = {**artifact.manifest, "format": FORMAT, "files": files}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return out


def load_artifact(model_dir: str | Path) -> Artifact:
    """Read and sanity-check an artifact directory; every failure names the file and reason."""
    d = Path(model_dir)
    mpath = d / MANIFEST
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{mpath}: not found (is {d} a model directory?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{mpath}: unreadable manifest: {exc}") from None
    for key in ("version", "encoders", "head", "axes"):
        if key not in manifest:
            raise ArtifactError(f"{mpath}: missing key '{key}'")
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{mpath}: format {manifest.get('format')!r}, this code reads {FORMAT}")
    head = _load(d / HEAD)
    adapter = _load(d / ADAPTER) if ADAPTER in manifest.get("files", []) else None
    return Artifact(manifest=manifest, head=head, adapter=adapter)


def _load(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ArtifactError(f"{path}: not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: corrupt or truncated weights: {exc}") from None
