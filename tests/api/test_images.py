"""GET /v1/products/{id}/image: the photo fetched under the workers' rules (file://, S3 on moto), the
content type from the picture itself, 404 for no product or no image, 502 with the reason for every
refusal (policy, SSRF, size, not a picture), and who may call it."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from shared.config import Settings
from shared.db.session import session_scope
from shared.db.tags import TaggingResult, apply_batch
from tests.api.conftest import LIMITS, REDIS_URL

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
BUCKET = "review-images"


def picture(fmt: str = "JPEG", size: tuple[int, int] = (6, 4)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 40)).save(out, format=fmt)
    return out.getvalue()


def add_product(db: str, product_id: str, image_uri: str | None) -> None:
    with session_scope(db) as session:
        apply_batch(session, [TaggingResult(
            event_id=f"e-{product_id}", product_id=product_id, seller_id="s1", title=f"Product {product_id}",
            description=None, image_uri=image_uri, locale=None, occurred_at=T0,
            content_hash=f"h-{product_id}", model_version="v1", tags=(("colour", "Red", 0.5, "review"),),
        )])


def auth(tokens: dict[str, str], role: str = "reviewer") -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[role]}"}


@pytest.fixture
def make_client(db: str, broker: Any) -> Iterator[Callable[..., TestClient]]:
    """An app with the given image-fetch settings (file:// URIs allowed unless told otherwise)."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = Settings(database_url=db, broker_url=REDIS_URL, **{"allow_file_uris": True, **overrides})
        client = TestClient(create_app(settings, LIMITS))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[tuple[str, Any]]:
    """S3 on a local moto server: its endpoint and a client to put objects with."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    client.create_bucket(Bucket=BUCKET)
    yield endpoint, client
    server.stop()


def test_file_image_is_served_with_its_content_type(
    make_client: Callable[..., TestClient], tokens: dict[str, str], db: str, tmp_path: Path,
) -> None:
    jpeg, png = picture("JPEG"), picture("PNG")
    (tmp_path / "a.jpg").write_bytes(jpeg)
    (tmp_path / "b.png").write_bytes(png)
    add_product(db, "p-jpg", (tmp_path / "a.jpg").as_uri())
    add_product(db, "p-png", (tmp_path / "b.png").as_uri())
    client = make_client()
    for role in ("reviewer", "reader", "admin"):
        response = client.get("/v1/products/p-jpg/image", headers=auth(tokens, role))
        assert response.status_code == 200, (role, response.text)
        assert response.content == jpeg
        assert response.headers["content-type"] == "image/jpeg"
        assert response.headers["x-content-type-options"] == "nosniff"
    response = client.get("/v1/products/p-png/image", headers=auth(tokens))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content == png


def test_s3_image_is_fetched_through_the_allow_list(
    make_client: Callable[..., TestClient], tokens: dict[str, str], db: str,
    moto_s3: tuple[str, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint, s3 = moto_s3
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    jpeg = picture()
    s3.put_object(Bucket=BUCKET, Key="shoes/1.jpg", Body=jpeg)
    add_product(db, "s3-ok", f"s3://{BUCKET}/shoes/1.jpg")
    add_product(db, "s3-missing", f"s3://{BUCKET}/shoes/none.jpg")
    add_product(db, "s3-other", "s3://someone-elses-bucket/secret.jpg")
    client = make_client(s3_endpoint_url=endpoint, image_buckets=[BUCKET])
    response = client.get("/v1/products/s3-ok/image", headers=auth(tokens))
    assert response.status_code == 200, response.text
    assert response.content == jpeg and response.headers["content-type"] == "image/jpeg"
    missing = client.get("/v1/products/s3-missing/image", headers=auth(tokens))
    assert missing.status_code == 502
    assert "NoSuchKey" in missing.json()["detail"]
    other = client.get("/v1/products/s3-other/image", headers=auth(tokens))
    assert other.status_code == 502
    assert "not in TAGGER_IMAGE_BUCKETS" in other.json()["detail"]


def test_refusals_are_502_with_the_reason(
    make_client: Callable[..., TestClient], tokens: dict[str, str], db: str, tmp_path: Path,
) -> None:
    (tmp_path / "a.jpg").write_bytes(picture(size=(64, 64)))
    (tmp_path / "page.html").write_text("<script>alert(1)</script>")
    add_product(db, "p-file", (tmp_path / "a.jpg").as_uri())
    add_product(db, "p-html", (tmp_path / "page.html").as_uri())
    add_product(db, "p-gone", (tmp_path / "gone.jpg").as_uri())
    add_product(db, "p-local", "https://localhost/admin.jpg")
    add_product(db, "p-host", "https://evil.example/x.jpg")

    def detail(client: TestClient, product_id: str) -> str:
        response = client.get(f"/v1/products/{product_id}/image", headers=auth(tokens))
        assert response.status_code == 502, (product_id, response.text)
        return response.json()["detail"]

    strict = make_client(allow_file_uris=False, image_hosts=["localhost"])
    assert "TAGGER_ALLOW_FILE_URIS" in detail(strict, "p-file")
    assert "non-public address" in detail(strict, "p-local")  # SSRF guard: loopback is refused
    assert "not in TAGGER_IMAGE_HOSTS" in detail(strict, "p-host")
    dev = make_client(max_image_bytes=100)
    assert "over the 100 limit" in detail(dev, "p-file")
    assert "not a readable picture" in detail(dev, "p-html")  # never served as text/html
    assert "image not found" in detail(dev, "p-gone")


def test_unknown_product_or_no_image_is_404(
    make_client: Callable[..., TestClient], tokens: dict[str, str], db: str,
) -> None:
    add_product(db, "bare", None)
    client = make_client()
    unknown = client.get("/v1/products/nope/image", headers=auth(tokens))
    assert unknown.status_code == 404 and "'nope' not found" in unknown.json()["detail"]
    bare = client.get("/v1/products/bare/image", headers=auth(tokens))
    assert bare.status_code == 404 and "'bare' has no image" in bare.json()["detail"]


def test_needs_a_reviewer_or_reader_key(
    make_client: Callable[..., TestClient], tokens: dict[str, str], db: str,
) -> None:
    client = make_client()
    assert client.get("/v1/products/p1/image").status_code == 401
    response = client.get("/v1/products/p1/image", headers=auth(tokens, "producer"))
    assert response.status_code == 403
    assert "reader or reviewer" in response.json()["detail"]
