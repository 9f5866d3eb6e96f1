"""KeyCache on its own: bounded, TTL-limited, keyed by hash, failures never kept."""

from __future__ import annotations

import hashlib
import threading

import pytest

from shared.apikeys import KeyCache


class Clock:
    """A clock the test moves by hand (time itself is what is under test here)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_hit_within_ttl_and_reload_after() -> None:
    clock, calls = Clock(), []

    def load(token: str) -> str:
        calls.append(token)
        return f"key-of-{token}"

    cache: KeyCache[str] = KeyCache(5.0, clock=clock)
    assert cache.get("t1", load) == "key-of-t1"
    clock.now += 4.9
    assert cache.get("t1", load) == "key-of-t1"
    assert calls == ["t1"]
    clock.now += 0.2  # 5.1 s after the load: stale
    assert cache.get("t1", load) == "key-of-t1"
    assert calls == ["t1", "t1"]


def test_revoked_after_ttl() -> None:
    clock, valid = Clock(), {"t1"}
    cache: KeyCache[str] = KeyCache(5.0, clock=clock)

    def load(token: str) -> str | None:
        return token if token in valid else None

    assert cache.get("t1", load) == "t1"
    valid.clear()  # revoked
    assert cache.get("t1", load) == "t1"  # within the TTL: the documented delay
    clock.now += 5.0
    assert cache.get("t1", load) is None
    assert len(cache) == 0


def test_failures_are_not_cached() -> None:
    calls = []

    def load(token: str) -> None:
        calls.append(token)

    cache: KeyCache[str] = KeyCache(5.0, max_entries=8)
    for n in range(1000):
        assert cache.get(f"guess-{n}", load) is None
    assert len(cache) == 0
    assert cache.get("guess-1", load) is None
    assert len(calls) == 1001  # asked every time


def test_bounded_least_recently_used_goes_first() -> None:
    calls = []

    def load(token: str) -> str:
        calls.append(token)
        return token

    cache: KeyCache[str] = KeyCache(60.0, max_entries=3)
    for token in ("a", "b", "c"):
        cache.get(token, load)
    cache.get("a", load)  # a is now the most recently used
    cache.get("d", load)  # evicts b
    assert len(cache) == 3
    calls.clear()
    for token in ("a", "c", "d"):
        cache.get(token, load)
    assert calls == []
    cache.get("b", load)
    assert calls == ["b"]
    for n in range(10_000):
        cache.get(f"valid-{n}", load)
    assert len(cache) == 3


def test_keyed_by_sha256_not_token() -> None:
    cache: KeyCache[str] = KeyCache(5.0)
    cache.get("tg_abc_secret", lambda t: "principal")
    assert list(cache._entries) == [hashlib.sha256(b"tg_abc_secret").digest()]


def test_ttl_zero_is_off() -> None:
    calls = []
    cache: KeyCache[str] = KeyCache(0.0)
    for _ in range(3):
        cache.get("t", lambda t: calls.append(t) or "v")
    assert len(calls) == 3 and len(cache) == 0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        KeyCache(-1.0)
    with pytest.raises(ValueError):
        KeyCache(1.0, max_entries=0)


def test_threads_share_one_bounded_cache() -> None:
    cache: KeyCache[str] = KeyCache(60.0, max_entries=50)

    def hammer(k: int) -> None:
        for n in range(2000):
            assert cache.get(f"{k}-{n % 200}", lambda t: t) == f"{k}-{n % 200}"

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 50
