"""Object stores: write-once keys, clear not-found errors, listing and URIs, on a directory and on S3."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings
from shared.storage import (
    LocalStore,
    ObjectExistsError,
    ObjectNotFound,
    S3Store,
    StoreConfigError,
    open_store,
)


def test_put_get_exists_list(store: Any) -> None:
    store.put("models/v1/a.bin", b"one")
    store.put("models/v1/b.bin", b"two")
    store.put("models/v10/a.bin", b"ten")
    assert store.get("models/v1/a.bin") == b"one"
    assert store.exists("models/v1/b.bin")
    assert not store.exists("models/v1/c.bin")
    assert store.list("models/v1/") == ["models/v1/a.bin", "models/v1/b.bin"]
    assert store.list("models/v1") == ["models/v1/a.bin", "models/v1/b.bin", "models/v10/a.bin"]
    assert store.list("nothing/") == []


def test_keys_are_write_once(store: Any) -> None:
    store.put("models/v1/head.safetensors", b"original")
    with pytest.raises(ObjectExistsError, match="already exists"):
        store.put("models/v1/head.safetensors", b"replacement")
    assert store.get("models/v1/head.safetensors") == b"original"


def test_missing_key_is_a_clear_error(store: Any) -> None:
    with pytest.raises(ObjectNotFound, match=r"models/v9/manifest\.json: not found"):
        store.get("models/v9/manifest.json")


@pytest.mark.parametrize("key", ["", "../escape", "models/../../etc", "/abs", "a//b", "a/./b", "a\\b"])
def test_keys_cannot_escape_the_root(store: Any, key: str) -> None:
    with pytest.raises(StoreConfigError, match="plain names"):
        store.put(key, b"x")


def test_local_store_racing_writers_one_wins(local_store: LocalStore) -> None:
    wins: list[bytes] = []
    refused: list[bytes] = []
    start = threading.Barrier(8)

    def write(data: bytes) -> None:
        start.wait()
        try:
            local_store.put("models/v1/race.bin", data)
            wins.append(data)
        except ObjectExistsError:
            refused.append(data)

    threads = [threading.Thread(target=write, args=(bytes([i]) * 1000,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(refused) == 7
    assert local_store.get("models/v1/race.bin") == wins[0]
    # No temporary file is left behind or listed.
    assert [p.name for p in (local_store.root / "models" / "v1").iterdir()] == ["race.bin"]


def test_local_store_uri_and_relative_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("file://var/objects", Settings())
    assert isinstance(store, LocalStore)
    assert store.root == tmp_path / "var" / "objects"
    store.put("models/v1/x", b"1")
    assert store.uri("models/v1") == (tmp_path / "var" / "objects" / "models" / "v1").as_uri()
    absolute = open_store(f"file://{tmp_path}/abs")
    assert isinstance(absolute, LocalStore) and absolute.root == tmp_path / "abs"


def test_s3_store_uri_and_open(s3_endpoint: str, s3_bucket: str) -> None:
    store = open_store(f"s3://{s3_bucket}/deep/prefix", Settings(s3_endpoint_url=s3_endpoint))
    assert isinstance(store, S3Store)
    store.put("models/v1/x", b"1")
    assert store.uri("models/v1") == f"s3://{s3_bucket}/deep/prefix/models/v1"
    assert store.list("models/") == ["models/v1/x"]
    raw = store.client.list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert [o["Key"] for o in raw] == ["deep/prefix/models/v1/x"]


def test_s3_store_write_once_without_conditional_puts(s3_store: S3Store) -> None:
    """A store that ignores If-None-Match still refuses a second write (checked first)."""
    s3_store._conditional = False
    s3_store.put("models/v1/x", b"1")
    with pytest.raises(ObjectExistsError):
        s3_store.put("models/v1/x", b"2")
    assert s3_store.get("models/v1/x") == b"1"


def test_s3_missing_bucket_is_a_configuration_error(s3_endpoint: str) -> None:
    store = S3Store("no-such-bucket-here", endpoint_url=s3_endpoint)
    with pytest.raises(StoreConfigError, match="NoSuchBucket"):
        store.get("models/v1/x")


@pytest.mark.parametrize("url", ["http://example.com/x", "models", "s3:///prefix", "file://"])
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(StoreConfigError, match="object store"):
        open_store(url, Settings())


def test_s3_store_uses_conditional_puts(s3_store: S3Store) -> None:
    """On S3 (and moto) the refusal comes from the server's If-None-Match check, atomic under races."""
    s3_store.put("models/v1/x", b"1")
    with pytest.raises(ObjectExistsError):
        s3_store.put("models/v1/x", b"2")
    assert s3_store._conditional is True
