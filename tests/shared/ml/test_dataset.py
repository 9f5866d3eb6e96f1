"""Manifest parsing: good manifests load, bad ones fail naming the file, row or field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.errors import ManifestError
from shared.ml.dataset import load_manifest, load_records, read_images


def write(tmp: Path, manifest: str, table: str, name: str = "products.csv") -> Path:
    (tmp / name).write_text(table)
    m = tmp / "dataset.yaml"
    m.write_text(manifest)
    return m


BASE = """name: t
table: {table}
id: id
text: [title, description]
image: image
axes:
  colour: single
  tags: {{kind: multi, separator: "|"}}
"""


def test_sample_manifest_loads_every_row(sample_manifest: Path) -> None:
    m = load_manifest(sample_manifest)
    records = load_records(m)
    assert len(records) == 200
    images = read_images(m, [r.image_ref for r in records])
    assert len(images) == 200
    assert all(r.labels["articleType"] for r in records)


def test_text_columns_join_and_empty_labels_are_skipped(tmp_path: Path) -> None:
    m = write(tmp_path, BASE.format(table="products.csv"),
              "id,title,description,image,colour,tags\n"
              "1,Red shirt,Cotton,a.jpg,Red,summer|casual\n"
              "2,,Only a description,,,\n")
    r1, r2 = load_records(load_manifest(m))
    assert r1.text == "Red shirt Cotton"
    assert r1.labels == {"colour": ["Red"], "tags": ["summer", "casual"]}
    assert r2.text == "Only a description" and r2.image_ref is None
    assert r2.labels == {"colour": [], "tags": []}


def test_jsonl_table(tmp_path: Path) -> None:
    rows = [{"id": 1, "title": "Blue jeans", "colour": "Blue", "tags": ["denim", "casual"]}]
    m = write(tmp_path, BASE.format(table="p.jsonl"),
              "\n".join(json.dumps(r) for r in rows) + "\n", name="p.jsonl")
    (rec,) = load_records(load_manifest(m))
    assert rec.labels["tags"] == ["denim", "casual"] and rec.text == "Blue jeans"


@pytest.mark.parametrize(
    ("manifest", "table", "expected"),
    [
        (BASE.format(table="products.csv"), "id,title,description,image,colour\n1,a,b,c,d\n",
         "field 'axes' names column(s) ['tags'] missing"),
        (BASE.format(table="products.csv").replace("colour: single", "colour: triple"),
         "id,title\n", "field 'axes.colour.kind'"),
        (BASE.format(table="nope.csv"), "", "field 'table': file not found"),
        ("name: t\ntable: products.csv\nid: id\n", "id\n1\n", "field 'axes'"),
        ("name: [unclosed", "", "cannot read manifest"),
        (BASE.format(table="products.csv").replace("id: id", "id: id\nextra: 1"), "id\n",
         "field 'extra'"),
    ],
)
def test_manifest_errors_name_the_problem(tmp_path: Path, manifest: str, table: str,
                                          expected: str) -> None:
    m = write(tmp_path, manifest, table)
    with pytest.raises(ManifestError, match="dataset.yaml|products.csv") as err:
        load_records(load_manifest(m))
    assert expected in str(err.value)


def test_row_errors_name_the_row(tmp_path: Path) -> None:
    m = write(tmp_path, BASE.format(table="products.csv"),
              "id,title,description,image,colour,tags\n1,a,,,,\n1,b,,,,\n")
    with pytest.raises(ManifestError, match=r"line 3: duplicate id '1'"):
        load_records(load_manifest(m))
    m = write(tmp_path, BASE.format(table="p.jsonl"), '{"id": 1}\n{broken\n', name="p.jsonl")
    with pytest.raises(ManifestError, match=r"p.jsonl: line 2: invalid JSON"):
        load_records(load_manifest(m))


def test_unreadable_archive_is_named(tmp_path: Path) -> None:
    m = write(tmp_path, BASE.format(table="products.csv") + "images_archive: images.tar.gz\n",
              "id,title,description,image,colour,tags\n1,a,,x.jpg,,\n")
    (tmp_path / "images.tar.gz").write_bytes(b"not a tar file")
    manifest = load_manifest(m)
    with pytest.raises(ManifestError, match="images.tar.gz: cannot read images archive"):
        read_images(manifest, ["x.jpg"])
