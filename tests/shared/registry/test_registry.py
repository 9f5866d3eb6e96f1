"""The registry's promises: a published artifact comes back verified, a corrupt or truncated one never
goes live, promotion retires the old champion, rollback restores it; on Postgres and SQLite."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from shared.config import DEFAULT_MODEL_DIR
from shared.db.models import ModelVersion
from shared.errors import ArtifactError
from shared.registry import (
    RegistryError,
    ensure_default_registered,
    fetch_artifact,
    get_version,
    list_versions,
    live_version,
    promote,
    publish_artifact,
    register,
    rollback,
)
from shared.storage import LocalStore, ObjectExistsError
from tests.shared.registry.conftest import overwrite

MakeModel = Callable[[str], Path]


def _statuses(session: Session) -> dict[str, str]:
    return {row.version: row.status for row in list_versions(session)}


def test_publish_then_fetch_round_trip(store: Any, make_model: MakeModel, tmp_path: Path) -> None:
    model = make_model("v1")
    uri, checks = publish_artifact(store, model)
    assert uri == store.uri("models/v1")
    assert set(checks["files"]) == {"manifest.json", "head.safetensors", "novelty.safetensors",
                                    "experts.safetensors"}
    assert store.list("models/v1/") == sorted(
        f"models/v1/{n}" for n in [*checks["files"], "checksums.json"])

    got = fetch_artifact(store, uri, tmp_path / "cache")
    assert got == tmp_path / "cache" / "v1"
    for name in checks["files"]:
        assert (got / name).read_bytes() == (model / name).read_bytes()
    # Fetching by version name gives the same verified folder.
    assert fetch_artifact(store, "v1", tmp_path / "cache") == got


def test_publish_refuses_an_existing_version(local_store: LocalStore, make_model: MakeModel) -> None:
    model = make_model("v1")
    publish_artifact(local_store, model)
    with pytest.raises(ObjectExistsError, match="already published"):
        publish_artifact(local_store, model)


def test_publish_refuses_a_truncated_local_artifact(local_store: LocalStore, make_model: MakeModel) -> None:
    model = make_model("v1")
    head = model / "head.safetensors"
    head.write_bytes(head.read_bytes()[: head.stat().st_size // 2])
    with pytest.raises(ArtifactError, match="head.safetensors"):
        publish_artifact(local_store, model)
    assert local_store.list("models/") == []


def test_an_interrupted_upload_can_be_published_later(local_store: LocalStore, make_model: MakeModel) -> None:
    """An upload that died before checksums.json left some files; the same bytes may complete it."""
    model = make_model("v1")
    local_store.put("models/v1/manifest.json", (model / "manifest.json").read_bytes())
    publish_artifact(local_store, model)
    assert local_store.exists("models/v1/checksums.json")


def test_cache_is_used_once_verified(local_store: LocalStore, make_model: MakeModel, tmp_path: Path) -> None:
    publish_artifact(local_store, make_model("v1"))
    cache = tmp_path / "cache"
    first = fetch_artifact(local_store, "v1", cache)
    # The store is now unreadable: a cached, verified copy is still served without asking it.
    overwrite(local_store, "models/v1/head.safetensors", None)
    assert fetch_artifact(local_store, "v1", cache) == first
    # A damaged cache copy (size changed) is not trusted: re-fetching then fails on the store.
    (first / "novelty.safetensors").write_bytes(b"short")
    with pytest.raises(ArtifactError, match="head.safetensors is missing"):
        fetch_artifact(local_store, "v1", cache)


def test_register_records_metrics_and_lineage(session: Session, local_store: LocalStore,
                                              make_model: MakeModel) -> None:
    from datetime import UTC, datetime

    register(session, local_store, make_model("v1"), status="live", reason="first")
    watermark = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    row = register(session, local_store, make_model("v2"), parent="v1", label_watermark=watermark,
                   reason="challenger")
    assert (row.status, row.parent_version, row.label_watermark, row.reason) == (
        "candidate", "v1", watermark, "challenger")
    assert row.uri == local_store.uri("models/v2")
    shipped = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    assert row.metrics == shipped["metrics"]
    assert [r.version for r in list_versions(session)] == ["v2", "v1"]
    with pytest.raises(RegistryError, match="already registered"):
        register(session, local_store, make_model("v2"))
    with pytest.raises(RegistryError, match="parent version nope"):
        register(session, local_store, make_model("v3"), parent="nope")


def test_register_adopts_an_identical_upload_whose_row_never_committed(
        session: Session, local_store: LocalStore, make_model: MakeModel) -> None:
    model = make_model("v1")
    publish_artifact(local_store, model)  # then the process died before its transaction committed
    assert register(session, local_store, model).status == "candidate"
    other = make_model("v2")
    publish_artifact(local_store, other)
    changed = json.loads((other / "manifest.json").read_text())
    changed["metrics"] = {}
    (other / "manifest.json").write_text(json.dumps(changed))
    with pytest.raises(ObjectExistsError, match="different artifact"):
        register(session, local_store, other)


def test_promote_retires_the_previous_live(session: Session, store: Any, make_model: MakeModel) -> None:
    register(session, store, make_model("v1"), status="live")
    register(session, store, make_model("v2"))
    assert _statuses(session) == {"v1": "live", "v2": "candidate"}

    row = promote(session, store, "v2", "better on every axis")
    assert live_version(session) is row
    assert (row.status, row.reason) == ("live", "better on every axis")
    assert row.promoted_at is not None
    assert _statuses(session) == {"v1": "retired", "v2": "live"}
    with pytest.raises(RegistryError, match="already live"):
        promote(session, store, "v2", "again")
    with pytest.raises(RegistryError, match="unknown model version v9"):
        promote(session, store, "v9", "?")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _truncate_head(store: Any, model: Path) -> None:
    data = (model / "head.safetensors").read_bytes()
    overwrite(store, "models/v2/head.safetensors", data[: len(data) // 3])


def _alter_checksum(store: Any, model: Path) -> None:
    doc = json.loads(store.get("models/v2/checksums.json"))
    doc["files"]["head.safetensors"]["sha256"] = _sha(b"something else")
    overwrite(store, "models/v2/checksums.json", json.dumps(doc).encode())


def _flip_a_byte(store: Any, model: Path) -> None:
    data = bytearray((model / "novelty.safetensors").read_bytes())
    data[len(data) // 2] ^= 0xFF
    overwrite(store, "models/v2/novelty.safetensors", bytes(data))


def _delete_guard(store: Any, model: Path) -> None:
    overwrite(store, "models/v2/novelty.safetensors", None)


def _delete_checksums(store: Any, model: Path) -> None:
    overwrite(store, "models/v2/checksums.json", None)


@pytest.mark.parametrize(("damage", "message"), [
    (_truncate_head, r"head\.safetensors is \d+ bytes, checksums\.json says \d+"),
    (_alter_checksum, r"head\.safetensors sha256 does not match"),
    (_flip_a_byte, r"novelty\.safetensors sha256 does not match"),
    (_delete_guard, r"novelty\.safetensors is missing"),
    (_delete_checksums, r"checksums\.json missing"),
])
def test_a_damaged_artifact_never_goes_live(session: Session, store: Any, make_model: MakeModel,
                                            damage: Callable[[Any, Path], None], message: str) -> None:
    register(session, store, make_model("v1"), status="live")
    model = make_model("v2")
    register(session, store, model)
    damage(store, model)

    with pytest.raises(ArtifactError, match=message):
        promote(session, store, "v2", "should not happen")
    assert _statuses(session) == {"v1": "live", "v2": "candidate"}
    assert get_version(session, "v1").promoted_at is not None
    assert get_version(session, "v2").promoted_at is None


def test_weights_that_match_their_checksums_but_do_not_load_never_go_live(
        session: Session, local_store: LocalStore, make_model: MakeModel) -> None:
    """A trainer that wrote a truncated head and checksummed it: the load check still refuses."""
    register(session, local_store, make_model("v1"), status="live")
    model = make_model("v2")
    head = (model / "head.safetensors").read_bytes()[:1000]
    manifest = (model / "manifest.json").read_bytes()
    blobs = {"manifest.json": manifest, "head.safetensors": head}
    for name in ("novelty.safetensors", "experts.safetensors"):  # whole, as the manifest lists them
        blobs[name] = (model / name).read_bytes()
    for name, data in blobs.items():
        local_store.put(f"models/v2/{name}", data)
    checks = {"version": "v2", "algorithm": "sha256",
              "files": {n: {"sha256": _sha(d), "size": len(d)} for n, d in blobs.items()}}
    local_store.put("models/v2/checksums.json", json.dumps(checks).encode())
    session.add(ModelVersion(version="v2", uri=local_store.uri("models/v2"), status="candidate", metrics={}))
    session.flush()

    with pytest.raises(ArtifactError, match=r"head\.safetensors: corrupt or truncated weights"):
        promote(session, local_store, "v2", "should not happen")
    assert live_version(session).version == "v1"


def test_a_version_whose_manifest_names_another_version_is_refused(
        session: Session, local_store: LocalStore, make_model: MakeModel) -> None:
    register(session, local_store, make_model("v1"))
    session.add(ModelVersion(version="v1-copy", uri=local_store.uri("models/v1-copy"), status="candidate",
                             metrics={}))
    session.flush()
    for name in local_store.list("models/v1/"):
        local_store.put(name.replace("models/v1/", "models/v1-copy/"), local_store.get(name))
    with pytest.raises(ArtifactError, match="not a checksums document for version v1-copy"):
        promote(session, local_store, "v1-copy", "?")


def test_rollback_restores_the_previous_live(session: Session, store: Any, make_model: MakeModel) -> None:
    for v in ("v1", "v2", "v3"):
        register(session, store, make_model(v))
        promote(session, store, v, f"promote {v}")
    assert _statuses(session) == {"v1": "retired", "v2": "retired", "v3": "live"}

    restored = rollback(session, store, "v3 tags shoes as bags")
    assert restored.version == "v2"
    assert live_version(session) is restored
    assert _statuses(session) == {"v1": "retired", "v2": "live", "v3": "retired"}
    v3 = get_version(session, "v3")
    assert (v3.reason, v3.promoted_at) == ("rolled back: v3 tags shoes as bags", None)
    assert restored.reason == "restored by rollback: v3 tags shoes as bags"

    # Rolling back again goes further back, never to the version just rolled back.
    assert rollback(session, store, "v2 too").version == "v1"
    assert _statuses(session) == {"v1": "live", "v2": "retired", "v3": "retired"}
    with pytest.raises(RegistryError, match="no earlier live version"):
        rollback(session, store, "nothing left")
    assert live_version(session).version == "v1"
    # A rolled-back version can still be promoted by name.
    promote(session, store, "v3", "fixed upstream")
    assert rollback(session, store, "again").version == "v1"


def test_rollback_never_restores_a_damaged_artifact(session: Session, local_store: LocalStore,
                                                   make_model: MakeModel) -> None:
    register(session, local_store, make_model("v1"), status="live")
    model = make_model("v2")
    register(session, local_store, model, status="live")
    overwrite(local_store, "models/v1/head.safetensors", b"")
    with pytest.raises(ArtifactError, match="head.safetensors"):
        rollback(session, local_store, "v2 is bad")
    assert _statuses(session) == {"v1": "retired", "v2": "live"}


def test_rollback_without_a_live_version(session: Session, local_store: LocalStore) -> None:
    with pytest.raises(RegistryError, match="no version is live"):
        rollback(session, local_store, "?")


def test_ensure_default_registered(session: Session, store: Any) -> None:
    row = ensure_default_registered(session, store)
    assert row is not None and row.status == "live"
    shipped = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    assert row.version == shipped["version"]
    assert row.reason == "shipped default model"
    assert store.exists(f"models/{row.version}/checksums.json")
    # A second call (or a second worker starting) changes nothing.
    assert ensure_default_registered(session, store) is None
    assert [(r.version, r.status) for r in list_versions(session)] == [(row.version, "live")]


def test_ensure_default_registered_leaves_an_existing_registry_alone(
        session: Session, local_store: LocalStore, make_model: MakeModel) -> None:
    register(session, local_store, make_model("v1"))
    assert ensure_default_registered(session, local_store) is None
    assert live_version(session) is None


def test_fetch_refuses_a_uri_of_another_store(local_store: LocalStore, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="not a model in this object store"):
        fetch_artifact(local_store, "s3://elsewhere/models/v1", tmp_path)
    with pytest.raises(RegistryError, match="model version"):
        fetch_artifact(local_store, "../v1", tmp_path)
