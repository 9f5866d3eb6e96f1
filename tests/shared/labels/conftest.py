"""Label fixtures: the database fixtures of tests/shared/db, plus small manifests written per test."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

# One fresh Postgres database and one SQLite file per test session, each test in a rolled-back transaction.
from tests.shared.db.conftest import db_url, make_database, session  # noqa: F401

WriteManifest = Callable[..., Path]


def jpeg(colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    """A small real JPEG: its bytes (and so its sha256 name) differ per colour."""
    buf = io.BytesIO()
    Image.new("RGB", (24, 32), colour).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    return tmp_path / "label-images"


@pytest.fixture
def write_manifest(tmp_path: Path) -> WriteManifest:
    """Factory: a JSONL manifest of the given rows (id, title, image, one key per axis) and image files."""

    def write(rows: Sequence[Mapping[str, Any]], *, axes: Mapping[str, str] | None = None,
              images: Mapping[str, bytes] | None = None, name: str = "labels") -> Path:
        folder = tmp_path / name
        folder.mkdir()
        axes = axes or {"colour": "single", "usage": "single"}
        for ref, data in (images or {}).items():
            (folder / ref).parent.mkdir(parents=True, exist_ok=True)
            (folder / ref).write_bytes(data)
        with (folder / "products.jsonl").open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
        manifest = {"name": name, "table": "products.jsonl", "id": "id", "text": ["title"],
                    "image": "image", "axes": dict(axes)}
        path = folder / "dataset.yaml"
        path.write_text(json.dumps(manifest), encoding="utf-8")  # JSON is YAML
        return path

    return write
