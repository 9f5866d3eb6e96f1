"""The model manifest's schema: the shipped model reads unchanged, every bad manifest is named."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from shared.config import DEFAULT_MODEL_DIR
from shared.errors import ArtifactError
from shared.ml.artifact import Artifact, load_artifact, save_artifact
from shared.ml.manifest import FORMAT, HEAD, MANIFEST, parse_manifest, read_manifest

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = DEFAULT_MODEL_DIR / MANIFEST


def shipped() -> dict[str, Any]:
    return json.loads(SHIPPED.read_text())


def test_the_shipped_manifest_parses_and_round_trips_byte_for_byte() -> None:
    manifest = read_manifest(DEFAULT_MODEL_DIR)
    doc = shipped()
    assert manifest.version == doc["version"]
    assert manifest.format == FORMAT
    # The shipped model reads the frozen text encoder (no adapter: docs/MODEL.md says why) and
    # carries its text experts (the baseline's regressions, shared.ml.experts).
    assert manifest.files == [HEAD, "novelty.safetensors", "experts.safetensors"]
    assert not manifest.has_adapter and doc["experts"]["axes"]["articleType"]["weight"] > 0
    assert manifest.disagreement is not None and manifest.novelty is not None
    assert list(manifest.axes) == list(doc["axes"])
    gender = manifest.axes["gender"]
    assert gender.kind == "single" and gender.values == doc["axes"]["gender"]["values"]
    assert gender.thresholds == doc["axes"]["gender"]["thresholds"]
    assert manifest.encoders.text.base_id == doc["encoders"]["text"]["base_id"]
    assert manifest.encoders.image.arch == "tf_efficientnet_lite0"
    # Writing it back gives the committed bytes: the published checksums stay valid.
    assert json.dumps(manifest.to_json(), indent=2) + "\n" == SHIPPED.read_text()


def test_the_manifest_module_imports_no_torch() -> None:
    code = textwrap.dedent("""
        import sys
        import shared.ml.manifest, shared.registry
        print(sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "torchvision", "transformers"}))
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_unknown_keys_are_kept_for_newer_writers() -> None:
    doc = shipped()
    doc["drift_baseline"] = {"psi": 0.1}
    doc["axes"]["gender"]["hierarchy"] = "masterCategory"
    out = parse_manifest(json.dumps(doc), "new.json").to_json()
    assert out["drift_baseline"] == {"psi": 0.1}
    assert out["axes"]["gender"]["hierarchy"] == "masterCategory"


def _without(doc: dict[str, Any], *path: str) -> dict[str, Any]:
    node = doc
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return doc


@pytest.mark.parametrize(("path", "key"), [
    (("version",), "version"),
    (("axes",), "axes"),
    (("encoders", "text", "base_id"), "encoders.text.base_id"),
    (("head", "config"), "head.config"),
    (("axes", "season", "values"), "axes.season.values"),
])
def test_a_missing_key_is_named(path: tuple[str, ...], key: str) -> None:
    with pytest.raises(ArtifactError, match=rf"^m\.json: missing key '{key}'$"):
        parse_manifest(_without(shipped(), *path), "m.json")


def test_a_key_of_the_wrong_kind_is_named() -> None:
    doc = shipped()
    doc["axes"]["usage"]["kind"] = "several"
    doc["files"] = "head.safetensors"
    with pytest.raises(ArtifactError, match=r"field 'axes\.usage\.kind': .*; field 'files': ") as info:
        parse_manifest(doc, "m.json")
    assert str(info.value).startswith("m.json: ")


@pytest.mark.parametrize("fmt", [2, None, "1", 0])
def test_a_format_this_code_does_not_read_is_refused(fmt: object) -> None:
    doc = shipped()
    if fmt is None:
        del doc["format"]
    else:
        doc["format"] = fmt
    with pytest.raises(ArtifactError, match=rf"^m\.json: format {fmt!r}, this code reads {FORMAT}$"):
        parse_manifest(doc, "m.json")


@pytest.mark.parametrize(("data", "message"), [
    (b'{"version": ', r"^m\.json: unreadable manifest: "),
    (b"\xff\xfe{}", r"^m\.json: unreadable manifest: "),
    ("[1, 2]", r"^m\.json: a manifest is a JSON object, not list$"),
])
def test_bytes_that_are_not_a_manifest_are_refused(data: bytes | str, message: str) -> None:
    with pytest.raises(ArtifactError, match=message):
        parse_manifest(data, "m.json")


def test_reading_a_folder_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"manifest\.json: not found \(is .* a model directory\?\)"):
        read_manifest(tmp_path)
    path = tmp_path / MANIFEST
    path.write_text('{"version": "v1"')
    with pytest.raises(ArtifactError, match=rf"^{re.escape(str(path))}: unreadable manifest: "):
        read_manifest(tmp_path)


def test_the_loader_refuses_a_bad_manifest_before_reading_weights(tmp_path: Path) -> None:
    model = shutil.copytree(DEFAULT_MODEL_DIR, tmp_path / "model")
    (model / MANIFEST).write_text(json.dumps(_without(shipped(), "encoders")))
    with pytest.raises(ArtifactError, match=rf"^{re.escape(str(model / MANIFEST))}: missing key 'encoders'$"):
        load_artifact(model)


def test_saving_refuses_a_manifest_no_reader_would_accept(tmp_path: Path) -> None:
    good = load_artifact(DEFAULT_MODEL_DIR)
    again = save_artifact(tmp_path / "again", good)
    assert (again / MANIFEST).read_text() == SHIPPED.read_text()  # format and files, as shipped

    bad = Artifact(manifest=_without(dict(good.manifest), "head"), head={"w": torch.zeros(1)}, adapter=None)
    with pytest.raises(ArtifactError, match=r"manifest\.json: missing key 'head'$"):
        save_artifact(tmp_path / "bad", bad)
    assert not (tmp_path / "bad").exists()  # nothing written
