"""The image fetcher's policy (refused before any connection) and its limits, against loopback servers."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.config import Settings
from shared.fetch import FetchError, ImageFetcher, _is_public
from tests.servers import CountingListener, TlsImageServer, drip, self_signed_cert, send_bytes

JPEG = b"\xff\xd8\xff\xe0fake-jpeg-bytes"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls(cert: tuple[Path, Path]) -> Iterator[TlsImageServer]:
    server = TlsImageServer(*cert, routes={
        "/ok.jpg": send_bytes(JPEG),
        "/moved.jpg": send_bytes(b"", status=302, headers={"Location": "https://127.0.0.1/ok.jpg",
                                                           "Content-Length": "0"}),
        "/big.jpg": send_bytes(b"x" * 5000),
        "/big-chunked.jpg": send_bytes(b"x" * 5000, headers={"Connection": "close"}),
        "/drip.jpg": drip(total=1000, every_s=0.05),
    })
    yield server
    server.close()


@pytest.fixture
def listener() -> Iterator[CountingListener]:
    lst = CountingListener()
    yield lst
    lst.close()


def fetcher(**overrides: object) -> ImageFetcher:
    base: dict[str, object] = {"image_hosts": ["localhost"], "fetch_timeout_s": 1.0, "max_image_bytes": 4000}
    return ImageFetcher(Settings(**{**base, **overrides}))


def refused(f: ImageFetcher, uri: str) -> str:
    (got,) = f.fetch_many([uri])
    assert isinstance(got, FetchError), got
    return str(got)


# --- policy: decided before any request --------------------------------------------------------

def test_host_not_allow_listed_is_refused_without_a_connection(listener: CountingListener) -> None:
    f = fetcher(image_hosts=["cdn.example.com"], allow_private_addresses=True)
    assert "not in TAGGER_IMAGE_HOSTS" in refused(f, f"https://localhost:{listener.port}/a.jpg")
    assert "not in TAGGER_IMAGE_HOSTS" in refused(f, f"https://cdn.example.com@localhost:{listener.port}/a")
    time.sleep(0.3)
    assert listener.accepted == 0


def test_private_or_loopback_address_is_refused_without_a_connection(listener: CountingListener) -> None:
    reason = refused(fetcher(), f"https://localhost:{listener.port}/a.jpg")
    assert "non-public address" in reason and "TAGGER_ALLOW_PRIVATE_ADDRESSES" in reason
    time.sleep(0.3)
    assert listener.accepted == 0


@pytest.mark.parametrize("addr", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "100.64.0.1", "::1",
                                  "fe80::1%eth0", "::ffff:127.0.0.1", "2002:7f00:1::1",
                                  "64:ff9b::a01:203", "224.0.0.1", "0.0.0.0"])
def test_non_public_addresses(addr: str) -> None:
    assert not _is_public(addr)


@pytest.mark.parametrize("addr", ["8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808"])
def test_public_addresses(addr: str) -> None:
    assert _is_public(addr)


def test_bucket_not_allow_listed_is_refused_without_a_request(listener: CountingListener) -> None:
    f = fetcher(image_buckets=["tagger-images"], s3_endpoint_url=f"http://127.0.0.1:{listener.port}")
    assert "bucket 'other' is not in TAGGER_IMAGE_BUCKETS" in refused(f, "s3://other/a.jpg")
    time.sleep(0.3)
    assert listener.accepted == 0 and f._s3 is None


@pytest.mark.parametrize(("uri", "reason"), [
    ("file:///etc/hostname", "file:// URIs are disabled"),
    ("http://localhost/a.jpg", "scheme 'http' is not supported"),
    ("ftp://localhost/a.jpg", "scheme 'ftp' is not supported"),
    ("https://localhost:99999/a.jpg", "malformed URI"),
    ("https://[::1/a.jpg", "malformed URI"),
    ("s3://bucket-only", "needs a bucket and a key"),
])
def test_unsupported_or_malformed_uris(uri: str, reason: str) -> None:
    assert reason in refused(fetcher(), uri)


def test_file_uris_only_when_enabled_and_only_local(tmp_path: Path) -> None:
    img = tmp_path / "a.jpg"
    img.write_bytes(JPEG)
    f = fetcher(allow_file_uris=True)
    assert f.fetch_many([img.as_uri(), None]) == [JPEG, None]
    other = tmp_path / "b.jpg"
    other.write_bytes(JPEG + b"\0")
    # Slots stay in order when only some events carry a photo (those alone go to the pool).
    got = f.fetch_many([None, other.as_uri(), None, img.as_uri(), ""])
    assert got == [None, JPEG + b"\0", None, JPEG, None]
    assert f.fetch_many([None, None]) == [None, None] and f.fetch_many([]) == []
    assert "only local files" in refused(f, f"file://files.example.com{img}")
    assert "image not found" in refused(f, (tmp_path / "missing.jpg").as_uri())
    (tmp_path / "big.jpg").write_bytes(b"x" * 5000)
    assert "over the 4000 limit" in refused(f, (tmp_path / "big.jpg").as_uri())


def test_an_unexpected_error_fails_only_its_image(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    img = tmp_path / "a.jpg"
    img.write_bytes(JPEG)
    f = fetcher(allow_file_uris=True)
    real = f.fetch

    def flaky(uri: str) -> bytes:
        if "boom" in uri:
            raise RuntimeError("decoder exploded")
        return real(uri)

    monkeypatch.setattr(f, "fetch", flaky)
    ok, bad = f.fetch_many([img.as_uri(), "https://localhost/boom.jpg"])
    assert ok == JPEG and isinstance(bad, FetchError) and "RuntimeError: decoder exploded" in str(bad)


# --- https against a real TLS server -----------------------------------------------------------

def tls_fetcher(cert: tuple[Path, Path], **overrides: object) -> ImageFetcher:
    return fetcher(allow_private_addresses=True, fetch_ca_bundle=str(cert[0]), **overrides)


def test_https_fetch_from_an_allowed_host(tls: TlsImageServer, cert: tuple[Path, Path]) -> None:
    assert tls_fetcher(cert).fetch(f"https://localhost:{tls.port}/ok.jpg") == JPEG


def test_https_errors_are_reasons(tls: TlsImageServer, cert: tuple[Path, Path]) -> None:
    f = tls_fetcher(cert)
    base = f"https://localhost:{tls.port}"
    assert "HTTP 404" in refused(f, f"{base}/missing.jpg")
    seen = len(tls.requests)
    assert "HTTP 302" in refused(f, f"{base}/moved.jpg")
    assert tls.requests[seen:] == ["/moved.jpg"]  # the redirect is not followed
    assert "over the 4000 limit" in refused(f, f"{base}/big.jpg")
    assert "over the 4000 limit" in refused(f, f"{base}/big-chunked.jpg")


def test_https_certificate_is_verified(tls: TlsImageServer) -> None:
    reason = refused(fetcher(allow_private_addresses=True), f"https://localhost:{tls.port}/ok.jpg")
    assert "CERTIFICATE_VERIFY_FAILED" in reason or "certificate" in reason.lower()


def test_https_server_that_never_answers_times_out(cert: tuple[Path, Path]) -> None:
    hung = CountingListener(silent=True)
    try:
        t0 = time.monotonic()
        reason = refused(tls_fetcher(cert), f"https://localhost:{hung.port}/a.jpg")
        assert "timed out" in reason
        assert time.monotonic() - t0 < 4
    finally:
        hung.close()


def test_https_body_that_drips_times_out_as_a_whole(tls: TlsImageServer, cert: tuple[Path, Path]) -> None:
    t0 = time.monotonic()
    reason = refused(tls_fetcher(cert, max_image_bytes=10_000), f"https://localhost:{tls.port}/drip.jpg")
    assert "timed out" in reason
    assert time.monotonic() - t0 < 4  # 1000 bytes x 50 ms would take 50 s


# --- issue 11 -------------------------------------------------------------------------------------

@pytest.mark.parametrize("addr", [
    "::127.0.0.1", "::7f00:1", "::8.8.8.8",  # IPv4-compatible (deprecated), reaches IPv4 on some stacks
    "64:ff9b:1::a01:203", "64:ff9b:1::808:808",  # RFC 8215 local-use NAT64: never public
    "64:ff9b::7f00:1", "64:ff9b::a00:1",  # well-known NAT64 to a private IPv4
    "::ffff:0:7f00:1", "100::1", "fc00::1",
])
def test_ipv6_forms_of_internal_addresses_are_not_public(addr: str) -> None:
    assert not _is_public(addr)


def test_empty_bucket_list_allows_no_bucket_and_a_star_allows_any() -> None:
    reason = refused(fetcher(), "s3://any-bucket/a.jpg")
    assert "bucket 'any-bucket' is not in TAGGER_IMAGE_BUCKETS (empty: no bucket is allowed" in reason
    assert fetcher(image_buckets=["*"]).check("s3://any-bucket/a.jpg") == ("s3", ("any-bucket", "a.jpg"))
    assert fetcher(image_buckets=["b"]).check("s3://b/k%20x.jpg") == ("s3", ("b", "k x.jpg"))


def test_a_fifo_or_a_directory_is_refused_at_once(tmp_path: Path) -> None:
    """Opening a FIFO for reading waits for a writer: the dev fetch must not hang on one."""
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    f = fetcher(allow_file_uris=True)
    got: list[str] = []
    worker = threading.Thread(target=lambda: got.append(refused(f, fifo.as_uri())), daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert got == [f"image {fifo} is not a regular file"]
    assert refused(f, tmp_path.as_uri()) == f"image {tmp_path} is not a regular file"
