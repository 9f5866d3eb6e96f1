"""The review page in a real headless browser (Debian's chromium, driven by Playwright; nothing is
downloaded): the real app under uvicorn on loopback, the real Postgres test database. A reviewer
signs in with a key, sees photos, titles and scores, pages on, confirms with a click, corrects and
rejects with keys, sees the API's errors; the decisions must land in ``product_tags`` as human rows."""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from shared.config import Settings
from shared.db.models import ProductTag
from shared.db.session import session_scope
from shared.db.tags import TaggingResult, apply_batch
from tests.api.conftest import LIMITS, QUEUE, REDIS_URL

CHROMIUM = os.environ.get("TAGGER_TEST_CHROMIUM", "/usr/bin/chromium")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TIMEOUT_MS = 5000


@pytest.fixture
def catalogue(db: str, tmp_path: Path) -> None:
    """Queue order (lowest best score first): b3 type, b2 colour, b1 colour; b1 and b2 have photos."""
    def photo(name: str, colour: tuple[int, int, int]) -> str:
        out = io.BytesIO()
        Image.new("RGB", (24, 16), colour).save(out, format="JPEG")
        (tmp_path / name).write_bytes(out.getvalue())
        return (tmp_path / name).as_uri()

    def result(product_id: str, title: str, image_uri: str | None,
               tags: tuple[tuple[str, str, float, str], ...]) -> TaggingResult:
        return TaggingResult(
            event_id=f"e-{product_id}", product_id=product_id, seller_id="s1", title=title, description=None,
            image_uri=image_uri, locale=None, occurred_at=T0, content_hash=f"h-{product_id}",
            model_version="v1", tags=tags)

    with session_scope(db) as session:
        apply_batch(session, [
            result("b1", "Nike Men Blue Running Shoes", photo("b1.jpg", (20, 40, 200)),
                   (("colour", "Blue", 0.60, "review"), ("colour", "Navy", 0.30, "review"))),
            result("b2", "Puma Women Black Jacket", photo("b2.jpg", (10, 10, 10)),
                   (("colour", "Black", 0.45, "review"), ("colour", "Grey", 0.40, "review"))),
            result("b3", "Leather Bag", None, (("type", "Bag", 0.30, "review"),)),
        ])


@pytest.fixture
def base_url(db: str, broker: Any) -> Iterator[str]:
    """The real app served by uvicorn on a free loopback port, in a thread of this process."""
    settings = Settings(database_url=db, broker_url=REDIS_URL, tagging_queue=QUEUE, allow_file_uris=True)
    server = uvicorn.Server(uvicorn.Config(create_app(settings, LIMITS), log_level="warning"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # bound here, so the port is known and nobody can take it first
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no browser at {CHROMIUM}: `apt-get install chromium` (.ci/services does) "
                    "or point TAGGER_TEST_CHROMIUM at one")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; a script error, or a console error other than a failed request (which the page
    itself reports, tested below), fails the test: that is how a CSP violation shows up."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}")
            if msg.type == "error" and "Failed to load resource" not in msg.text else None)
    yield page
    context.close()
    assert problems == []


def tag_rows(db: str, product_id: str, axis: str) -> dict[str, tuple[str, str]]:
    with session_scope(db) as session:
        rows = session.query(ProductTag).filter_by(product_id=product_id, axis=axis)
        return {t.value: (t.status, t.source) for t in rows}


def card(page: Any, product_id: str) -> Any:
    return page.locator(f"article.item[data-product='{product_id}']")


def test_reviewer_confirms_corrects_and_rejects(
    page: Any, base_url: str, tokens: dict[str, str], db: str, catalogue: None,
) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base_url}/review?limit=2")
    page.fill("#key", tokens["reviewer"])
    page.keyboard.press("Enter")
    # First page: the two most uncertain items, and a way to the next page.
    expect(page.locator("article.item")).to_have_count(2)
    assert page.locator("article.item").evaluate_all("ns => ns.map(n => n.dataset.product)") == ["b3", "b2"]
    b2 = card(page, "b2")
    expect(b2.locator(".title")).to_have_text("Puma Women Black Jacket")
    expect(b2.locator(".axis")).to_have_text("colour")
    expect(b2.locator(".score")).to_have_text(["0.45", "0.40"])
    page.wait_for_function("n => n.complete && n.naturalWidth === 24", arg=b2.locator("img").element_handle())
    expect(card(page, "b3").locator(".photo-note")).to_have_text("no photo")
    page.click("#more")
    expect(page.locator("article.item")).to_have_count(3)
    expect(page.locator("#more")).to_be_hidden()
    b1 = card(page, "b1")
    page.wait_for_function("n => n.complete && n.naturalWidth === 24", arg=b1.locator("img").element_handle())

    # A click confirms b1's top candidate; the item leaves the list.
    b1.locator("button.confirm", has_text="Blue").click()
    expect(b1).to_have_count(0)
    expect(page.locator("#notice")).to_contain_text("confirmed Blue")

    # Keys: k/j move the selection, c opens the correction, Enter saves it.
    page.keyboard.press("k")
    expect(card(page, "b3")).to_have_class("item selected")
    page.keyboard.press("j")
    expect(b2).to_have_class("item selected")
    page.keyboard.press("c")
    value = b2.locator("input.value")
    expect(value).to_be_focused()
    value.fill("x" * 101)  # too long for a label: the API's 422 names the field, the item stays
    value.press("Enter")
    expect(page.locator("#error")).to_contain_text("422: decisions[0]: corrected_value is 101 characters")
    expect(b2).to_have_count(1)
    value.fill("Grey")
    value.press("Enter")
    expect(b2).to_have_count(0)
    expect(page.locator("#error")).to_be_hidden()

    # r rejects every candidate of the last item; the queue is then empty.
    page.keyboard.press("r")
    expect(page.locator("article.item")).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()

    assert tag_rows(db, "b1", "colour") == {"Blue": ("confirmed", "human"), "Navy": ("review", "model")}
    assert tag_rows(db, "b2", "colour") == {"Black": ("rejected", "human"), "Grey": ("confirmed", "human")}
    assert tag_rows(db, "b3", "type") == {"Bag": ("rejected", "human")}


def test_bad_key_shows_the_401(page: Any, base_url: str, tokens: dict[str, str], db: str,
                               catalogue: None) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base_url}/review")
    page.fill("#key", tokens["reviewer"] + "x")
    page.click("#key-form button[type=submit]")
    expect(page.locator("#error")).to_have_text("401: invalid or revoked API key")
    expect(page.locator("#key-form")).to_be_visible()
    expect(page.locator("article.item")).to_have_count(0)
    # A key of the wrong role is named as such, and the reviewer may try again.
    page.fill("#key", tokens["reader"])
    page.keyboard.press("Enter")
    expect(page.locator("#error")).to_contain_text("403: role 'reader' may not use this route")
    page.fill("#key", tokens["reviewer"])
    page.keyboard.press("Enter")
    expect(page.locator("article.item")).to_have_count(3)
    expect(page.locator("#error")).to_be_hidden()


def test_audit_items_come_first_with_a_badge(page: Any, base_url: str, tokens: dict[str, str],
                                             db: str) -> None:
    """An applied tag sampled for audit, and one held back because its value is switched off, lead the
    queue with a badge saying which; rejecting the audited one stores a human rejection like any other."""
    from playwright.sync_api import expect

    def result(product_id: str, tags: tuple[tuple[object, ...], ...]) -> TaggingResult:
        return TaggingResult(event_id=f"e-{product_id}", product_id=product_id, seller_id="s1",
                             title=f"Product {product_id}", description=None, image_uri=None, locale=None,
                             occurred_at=T0, content_hash=f"h-{product_id}", model_version="v1", tags=tags)

    with session_scope(db) as session:
        apply_batch(session, [
            result("u1", (("colour", "Blue", 0.60, "review"),)),
            result("a1", (("colour", "Red", 0.99, "auto", "audit"),)),
            result("a2", (("colour", "Navy", 0.98, "review", "paused"), ("colour", "Blue", 0.01, "review"))),
        ])
    page.goto(f"{base_url}/review")
    page.fill("#key", tokens["reviewer"])
    page.keyboard.press("Enter")
    expect(page.locator("article.item")).to_have_count(3)
    assert page.locator("article.item").evaluate_all("ns => ns.map(n => n.dataset.product)")[2] == "u1"
    expect(card(page, "a1").locator(".badge")).to_have_text("audit")
    expect(card(page, "a2").locator(".badge")).to_have_text("audit · paused")
    expect(card(page, "u1").locator(".badge")).to_have_count(0)
    card(page, "a1").click()
    page.keyboard.press("r")
    expect(card(page, "a1")).to_have_count(0)
    assert tag_rows(db, "a1", "colour") == {"Red": ("rejected", "human")}


def test_page_is_public_no_data_and_out_of_the_schema(client: TestClient) -> None:
    page = client.get("/review")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset, kind in (("/static/review.js", "javascript"), ("/static/review.css", "text/css")):
        response = client.get(asset)
        assert response.status_code == 200 and kind in response.headers["content-type"], asset
    assert "http://" not in page.text and "https://" not in page.text  # nothing from the internet
    paths = client.get("/openapi.json").json()["paths"]
    assert "/review" not in paths and not any(p.startswith("/static") for p in paths)
    assert "/v1/products/{product_id}/image" in paths


def test_a_disagreement_shows_what_title_and_photo_each_said(page: Any, base_url: str,
                                                             tokens: dict[str, str], db: str) -> None:
    """A tag sent to review because its title and photo disagree shows the input shares and what
    each alone named; an item whose inputs agree shows the shares only."""
    from playwright.sync_api import expect

    split = {"shares": {"title": 0.62, "photo": 0.38}, "title_only": {"value": "Blue", "score": 0.93},
             "photo_only": {"value": "Black", "score": 0.9}}
    agree = {"shares": {"title": 0.8, "photo": 0.2}, "title_only": {"value": "Red", "score": 0.9},
             "photo_only": {"value": "Red", "score": 0.7}}

    def result(product_id: str, tags: tuple[tuple[object, ...], ...]) -> TaggingResult:
        return TaggingResult(event_id=f"e-{product_id}", product_id=product_id, seller_id="s1",
                             title=f"Product {product_id}", description=None, image_uri=None, locale=None,
                             occurred_at=T0, content_hash=f"h-{product_id}", model_version="v1", tags=tags)

    with session_scope(db) as session:
        apply_batch(session, [
            result("d1", (("colour", "Blue", 0.97, "review", "disagreement", split),
                          ("colour", "Black", 0.02, "review", "disagreement", split))),
            result("g1", (("colour", "Red", 0.55, "review", None, agree),)),
        ])
    page.goto(f"{base_url}/review")
    page.fill("#key", tokens["reviewer"])
    page.keyboard.press("Enter")
    expect(page.locator("article.item")).to_have_count(2)
    expect(card(page, "d1").locator(".evidence")).to_have_text(
        "title 62% · photo 38% — title alone: Blue (0.93), photo alone: Black (0.90)")
    expect(card(page, "g1").locator(".evidence")).to_have_text("title 80% · photo 20%")
