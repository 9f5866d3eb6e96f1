"""The model registry: artifacts written once under ``models/<version>/`` in the object store, and
their life (candidate, live, retired, rejected) in ``model_versions``.

An artifact is only ever made live after it has been downloaded back from the store and verified
(sha256 of every file against ``checksums.json``, then loaded), so a corrupt or truncated upload can
never become the model the workers swap to. Functions that touch the database take the session
first and never commit: the caller's transaction makes a promotion all-or-nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.config import DEFAULT_MODEL_DIR, Settings
from shared.db.base import utcnow
from shared.db.models import ModelVersion
from shared.errors import ArtifactError, PermanentError
from shared.ml.manifest import HEAD, MANIFEST, ModelManifest, read_manifest
from shared.storage import ObjectExistsError, ObjectNotFound, ObjectStore

log = logging.getLogger("shared.registry")

MODELS = "models"
CHECKSUMS = "checksums.json"
_MARKER = ".verified.json"  # in a cache folder: the checksums it was verified against
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# pg_advisory_xact_lock key serialising promote/rollback/first registration across processes.
REGISTRY_LOCK_KEY = 0x7461_6767_6D72  # "taggmr"
REGISTER_STATUSES = ("candidate", "rejected", "live")


class RegistryError(PermanentError):
    """A registry operation that cannot be done as asked (unknown version, nothing to roll back to)."""


def artifact_prefix(version: str) -> str:
    """The store key prefix of a version's files."""
    return f"{MODELS}/{_check_version(version)}"


def default_cache_dir(settings: Settings) -> Path:
    """Where verified downloads are kept, one folder per version."""
    return settings.cache_dir / "models"


def _check_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION.match(version):
        raise RegistryError(f"model version {version!r}: use letters, digits and . _ + - (max 128)")
    return version


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _versioned_manifest(model_dir: Path) -> ModelManifest:
    """The folder's manifest (schema: shared.ml.manifest), with a version usable as a store key."""
    manifest = read_manifest(model_dir)
    _check_version(manifest.version)
    return manifest


def _artifact_files(manifest: ModelManifest, where: str) -> list[str]:
    """manifest.json plus every file the manifest lists; names must stay inside the artifact."""
    files = manifest.files or [HEAD]
    for name in files:
        if not _FILE.match(name) or name in (MANIFEST, CHECKSUMS, _MARKER):
            raise ArtifactError(f"{where}: 'files' entry {name!r} is not a plain artifact file name")
    return [MANIFEST, *dict.fromkeys(files)]


def _checksums(version: str, blobs: dict[str, bytes]) -> dict[str, Any]:
    # Deterministic (no timestamps): equal content gives an equal document, which is how an
    # interrupted registration recognises its own upload.
    return {"version": version, "algorithm": "sha256",
            "files": {n: {"sha256": _sha256(b), "size": len(b)} for n, b in sorted(blobs.items())}}


def _read_local(model_dir: Path) -> tuple[ModelManifest, dict[str, bytes]]:
    manifest = _versioned_manifest(model_dir)
    blobs: dict[str, bytes] = {}
    for name in _artifact_files(manifest, str(model_dir / MANIFEST)):
        try:
            blobs[name] = (model_dir / name).read_bytes()
        except OSError as exc:
            raise ArtifactError(f"{model_dir / name}: {exc.strerror or exc}") from None
    return manifest, blobs


def published_checksums(store: ObjectStore, version: str) -> dict[str, Any] | None:
    """The version's checksums.json, or None when the version was never (completely) published."""
    key = f"{artifact_prefix(version)}/{CHECKSUMS}"
    try:
        doc = json.loads(store.get(key))
    except ObjectNotFound:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{store.uri(key)}: unreadable: {exc}") from None
    files = doc.get("files") if isinstance(doc, dict) else None
    if (not isinstance(files, dict) or doc.get("version") != version or doc.get("algorithm") != "sha256"
            or not all(isinstance(m, dict) and {"sha256", "size"} <= m.keys() for m in files.values())):
        raise ArtifactError(f"{store.uri(key)}: not a checksums document for version {version}")
    for name in files:
        if not _FILE.match(name) or name in (CHECKSUMS, _MARKER):
            raise ArtifactError(f"{store.uri(key)}: file name {name!r} is not a plain artifact file name")
    for required in (MANIFEST, HEAD):
        if required not in files:
            raise ArtifactError(f"{store.uri(key)}: lists no {required}")
    return doc


def publish_artifact(store: ObjectStore, model_dir: str | Path) -> tuple[str, dict[str, Any]]:
    """Upload an artifact under ``models/<version>/``, checksums.json last (its presence means
    complete); refuses a version already published. Returns (uri, checksums)."""
    from shared.ml.artifact import load_artifact

    model_dir = Path(model_dir)
    load_artifact(model_dir)  # never publish what could not be served
    manifest, blobs = _read_local(model_dir)
    version = manifest.version
    prefix = artifact_prefix(version)
    if store.exists(f"{prefix}/{CHECKSUMS}"):
        raise ObjectExistsError(f"{store.uri(prefix)}: version {version} is already published")
    checks = _checksums(version, blobs)
    for name, data in blobs.items():
        key = f"{prefix}/{name}"
        try:
            store.put(key, data)
        except ObjectExistsError:
            # Left by an upload that died before checksums.json: identical bytes may stay.
            if store.get(key) != data:
                raise ObjectExistsError(
                    f"{store.uri(key)} exists with different content; version {version} cannot be "
                    "published again (give the artifact a new version)") from None
    store.put(f"{prefix}/{CHECKSUMS}", json.dumps(checks, indent=2, sort_keys=True).encode() + b"\n")
    log.info("model_published version=%s files=%d bytes=%d", version, len(blobs),
             sum(len(b) for b in blobs.values()))
    return store.uri(prefix), checks


def register(
    session: Session, store: ObjectStore, model_dir: str | Path, *, status: str = "candidate",
    parent: str | None = None, label_watermark: datetime | None = None, reason: str | None = None,
) -> ModelVersion:
    """Publish an artifact and add its row (metrics from the manifest); ``status='live'`` also
    promotes it. An upload whose registration never committed is adopted if byte-identical."""
    if status not in REGISTER_STATUSES:
        raise RegistryError(f"register: status must be one of {', '.join(REGISTER_STATUSES)}, not {status!r}")
    model_dir = Path(model_dir)
    manifest, blobs = _read_local(model_dir)
    version = manifest.version
    if get_version(session, version) is not None:
        raise RegistryError(f"version {version} is already registered")
    if parent is not None and get_version(session, parent) is None:
        raise RegistryError(f"parent version {parent} is not registered")
    published = published_checksums(store, version)
    if published is None:
        uri, _ = publish_artifact(store, model_dir)
    elif published == _checksums(version, blobs):
        uri = store.uri(artifact_prefix(version))
        log.info("model_adopted version=%s uri=%s", version, uri)
    else:
        raise ObjectExistsError(
            f"{store.uri(artifact_prefix(version))}: a different artifact is already published as "
            f"version {version}")
    row = ModelVersion(
        version=version, uri=uri, status="candidate" if status == "live" else status,
        parent_version=parent, metrics=manifest.metrics or {}, label_watermark=label_watermark,
        reason=reason,
    )
    session.add(row)
    session.flush()
    if status == "live":
        promote(session, store, version, reason or "registered as live")
    return row


def _resolve_version(store: ObjectStore, version_or_uri: str) -> str:
    """A version name from itself or from the uri a row records (which must be in this store)."""
    if "://" not in version_or_uri:
        return _check_version(version_or_uri)
    base = store.uri(MODELS) + "/"
    ref = version_or_uri.rstrip("/")
    if not ref.startswith(base) or "/" in ref[len(base):]:
        raise RegistryError(f"{version_or_uri} is not a model in this object store ({base})")
    return _check_version(ref[len(base):])


def _download_verified(store: ObjectStore, version: str, dest: Path) -> dict[str, Any]:
    """Fetch every file into ``dest`` and prove it: sizes and sha256 against checksums.json, the
    manifest's file list covered, the version right, and the weights loadable."""
    from shared.ml.artifact import load_artifact

    prefix = artifact_prefix(version)
    where = f"model {version} ({store.uri(prefix)})"
    checks = published_checksums(store, version)
    if checks is None:
        raise ArtifactError(f"{where}: {CHECKSUMS} missing (not published, or its upload never finished)")
    for name, meta in checks["files"].items():
        try:
            data = store.get(f"{prefix}/{name}")
        except ObjectNotFound:
            raise ArtifactError(f"{where}: {name} is missing from the store") from None
        if len(data) != meta["size"]:
            raise ArtifactError(f"{where}: {name} is {len(data)} bytes, {CHECKSUMS} says {meta['size']} "
                                "(truncated or replaced)")
        if _sha256(data) != meta["sha256"]:
            raise ArtifactError(f"{where}: {name} sha256 does not match {CHECKSUMS} (corrupt or replaced)")
        (dest / name).write_bytes(data)
    try:
        manifest = _versioned_manifest(dest)
        for name in _artifact_files(manifest, MANIFEST):
            if name not in checks["files"]:
                raise ArtifactError(f"{name} is listed in {MANIFEST} but not in {CHECKSUMS}")
        artifact = load_artifact(dest)
    except ArtifactError as exc:  # name the file, not the temporary folder it was checked in
        raise ArtifactError(f"{where}: {str(exc).replace(str(dest) + os.sep, '')}") from None
    if artifact.version != version:
        raise ArtifactError(f"{where}: {MANIFEST} says version {artifact.version}")
    return checks


def _cached(folder: Path) -> bool:
    """A cache folder is usable if it was verified and no file changed size since."""
    try:
        checks = json.loads((folder / _MARKER).read_text())
        return all((folder / n).stat().st_size == m["size"] for n, m in checks["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def fetch_artifact(store: ObjectStore, version_or_uri: str, dest_dir: str | Path, *,
                   refresh: bool = False) -> Path:
    """The verified artifact folder ``dest_dir/<version>``: downloaded and verified once, then
    served from there (``refresh`` re-downloads); raises ArtifactError naming the bad file."""
    version = _resolve_version(store, version_or_uri)
    dest_dir = Path(dest_dir)
    final = dest_dir / version
    if not refresh and _cached(final):
        return final
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=dest_dir))
    try:
        checks = _download_verified(store, version, tmp)
        (tmp / _MARKER).write_text(json.dumps(checks, sort_keys=True))
        if final.exists():  # stale or damaged: move aside first so the rename below is atomic
            trash = Path(tempfile.mkdtemp(prefix=f".old-{version}-", dir=dest_dir))
            with contextlib.suppress(FileNotFoundError):
                final.rename(trash / version)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            tmp.rename(final)
        except OSError:
            # Another process published the same verified folder first; theirs is as good.
            if not _cached(final):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("model_fetched version=%s path=%s", version, final)
    return final


def verify_artifact(store: ObjectStore, version_or_uri: str) -> None:
    """Download the artifact afresh into a temporary folder and verify it; raises ArtifactError."""
    version = _resolve_version(store, version_or_uri)
    with tempfile.TemporaryDirectory(prefix="tagger-verify-") as tmp:
        _download_verified(store, version, Path(tmp))


def _lock(session: Session) -> None:
    # Postgres: two promotions (or two fresh workers registering the default) run one after the
    # other instead of one failing on the one-live index. SQLite serialises writers by itself.
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(REGISTRY_LOCK_KEY)))


def _fresh(session: Session, stmt: sa.Select[tuple[ModelVersion]]) -> ModelVersion | None:
    """Re-read after taking the lock: another transaction may have changed the rows since."""
    return session.execute(stmt.execution_options(populate_existing=True)).scalar_one_or_none()


def _live_stmt() -> sa.Select[tuple[ModelVersion]]:
    return sa.select(ModelVersion).where(ModelVersion.status == "live")


def _version_stmt(version: str) -> sa.Select[tuple[ModelVersion]]:
    return sa.select(ModelVersion).where(ModelVersion.version == version)


def promote(session: Session, store: ObjectStore, version: str, reason: str) -> ModelVersion:
    """Make ``version`` live and retire the previous live one, only after its artifact verifies
    from the store; on any error nothing changes."""
    row = get_version(session, version)
    if row is None:
        raise RegistryError(f"unknown model version {version}")
    if row.status == "live":
        raise RegistryError(f"version {version} is already live")
    verify_artifact(store, row.uri)
    _lock(session)
    row = _fresh(session, _version_stmt(version))
    if row is None or row.status == "live":
        raise RegistryError(f"version {version} changed while being promoted; try again")
    previous = _fresh(session, _live_stmt())
    if previous is not None:
        previous.status = "retired"
        session.flush()  # the one-live index: the old row must stop being live first
    row.status, row.promoted_at, row.reason = "live", utcnow(), reason
    session.flush()
    log.info("model_promoted version=%s previous=%s", version, previous.version if previous else None)
    return row


def rollback(session: Session, store: ObjectStore, reason: str) -> ModelVersion:
    """Retire the live version and make live again the retired version promoted most recently.
    The rolled-back version loses its promoted_at, so rolling back again goes further back instead
    of returning to it; it can still be promoted by name."""
    current = live_version(session)
    if current is None:
        raise RegistryError("no version is live; nothing to roll back (promote one by name)")
    target = session.execute(
        sa.select(ModelVersion)
        .where(ModelVersion.status == "retired", ModelVersion.promoted_at.is_not(None),
               ModelVersion.version != current.version)
        .order_by(ModelVersion.promoted_at.desc(), ModelVersion.version.desc())
        .limit(1)
    ).scalar_one_or_none()
    if target is None:
        raise RegistryError(f"no earlier live version to roll back to from {current.version}")
    verify_artifact(store, target.uri)
    _lock(session)
    now_live = _fresh(session, _live_stmt())
    target = _fresh(session, _version_stmt(target.version))
    if (now_live is None or now_live.version != current.version
            or target is None or target.status != "retired"):
        raise RegistryError("the live version changed during the rollback; try again")
    now_live.status, now_live.promoted_at, now_live.reason = "retired", None, f"rolled back: {reason}"
    session.flush()
    target.status, target.promoted_at, target.reason = "live", utcnow(), f"restored by rollback: {reason}"
    session.flush()
    log.info("model_rolled_back from=%s to=%s", now_live.version, target.version)
    return target


def live_version(session: Session) -> ModelVersion | None:
    """The row of the model workers should serve, if any."""
    return session.execute(_live_stmt()).scalar_one_or_none()


def list_versions(session: Session) -> list[ModelVersion]:
    """Every registered version, newest first."""
    stmt = sa.select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.version.desc())
    return list(session.execute(stmt).scalars())


def get_version(session: Session, version: str) -> ModelVersion | None:
    """One version's row, or None (by primary key: served from the session when already loaded)."""
    return session.get(ModelVersion, version)


def ensure_default_registered(session: Session, store: ObjectStore,
                              model_dir: str | Path = DEFAULT_MODEL_DIR) -> ModelVersion | None:
    """On a registry with no rows, register the shipped model as live (a fresh deployment needs a
    champion); returns the new row, or None when there already were versions. Idempotent."""
    _lock(session)
    if session.execute(sa.select(ModelVersion.version).limit(1)).first() is not None:
        return None
    return register(session, store, model_dir, status="live", reason="shipped default model")
