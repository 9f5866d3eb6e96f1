"""The OpenAPI document: the checked-in copy is what the app generates, it is valid OpenAPI 3.x, and a
bounded schemathesis run against the real app (Postgres, a private Redis) finds the app keeping it:
no 5xx, every status and body documented."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis import Case

from api.app import openapi_document
from api.openapi import render
from cli.api import REGENERATE, SPEC_PATH

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / SPEC_PATH


class AppSlot:
    """The ASGI app schemathesis calls (in-process). It binds the app to the schema's operations when the
    module is collected, before any fixture has built the real one, so it gets this slot and the
    ``served`` fixture puts each test's app into it. The slot answers lifespan messages itself: the
    TestClient the fixture holds runs the real app's lifespan and closes it after the test."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if self.app is None:
            raise RuntimeError("no app in the slot: the test must use the 'served' fixture")
        await self.app(scope, receive, send)


SLOT = AppSlot()
# Checks that do not fit this API's design, turned off with the reason:
# - positive_data_acceptance: schema-valid is not always acceptable here, on purpose and documented:
#   cursors are opaque (400 unless handed out), statuses and decisions are checked against the data (422);
# - negative_data_rejection on POST /v1/events: each event is validated on its own, so a batch with one
#   bad event is still a 202 for the others (the bad one is listed in ``rejected``).
CONFIG = schemathesis.Config.from_dict({
    "checks": {"positive_data_acceptance": {"enabled": False}},
    "operations": [{"include-path": "/v1/events", "checks": {"negative_data_rejection": {"enabled": False}}}],
})
schema = schemathesis.openapi.from_path(SPEC, config=CONFIG)
schema.app = SLOT  # as schemathesis.openapi.from_asgi does: cases (and auth probes) go to the app


def test_checked_in_spec_is_current() -> None:
    """A route or model changed without regenerating the document fails here, saying how to fix it."""
    assert SPEC.read_text(encoding="utf-8") == render(openapi_document()), (
        f"{SPEC_PATH} is out of date: run '{REGENERATE}' (from the repository root) and commit it")


def test_spec_is_deterministic_text() -> None:
    """Sorted keys, indent 2, one trailing newline: regenerating an unchanged API changes no byte."""
    text = SPEC.read_text(encoding="utf-8")
    assert text.endswith("}\n") and text == json.dumps(json.loads(text), indent=2, sort_keys=True,
                                                          ensure_ascii=False) + "\n"


def test_spec_is_valid_openapi_3() -> None:
    spec = json.loads(SPEC.read_text(encoding="utf-8"))
    assert spec["openapi"].startswith("3.")
    schema.validate()  # the OpenAPI 3.x meta-schema; raises on the first violation


def test_validation_catches_a_broken_document() -> None:
    """The check above can fail: the same document with one malformed operation is refused."""
    spec = json.loads(SPEC.read_text(encoding="utf-8"))
    spec["paths"]["/healthz"]["get"]["responses"] = "none"
    with pytest.raises(Exception, match="is not of type"):
        schemathesis.openapi.from_dict(spec).validate()


def test_ingest_body_is_the_event_contract() -> None:
    """The body FastAPI cannot see (read raw for the byte limit) is documented with the event's model."""
    spec = json.loads(SPEC.read_text(encoding="utf-8"))
    body = spec["paths"]["/v1/events"]["post"]["requestBody"]
    one_of = body["content"]["application/json"]["schema"]["oneOf"]
    ref = {"$ref": "#/components/schemas/ProductUploaded"}
    assert one_of[0] == ref and one_of[1]["type"] == "array" and one_of[1]["items"] == ref
    assert "TAGGER_API_MAX_BATCH" in body["description"]
    assert spec["components"]["schemas"]["ProductUploaded"]["additionalProperties"] is False
    for status in ("400", "401", "403", "413", "422"):
        assert status in spec["paths"]["/v1/events"]["post"]["responses"], status


# --- schemathesis against the real app --------------------------------------------------------------


@pytest.fixture
def served(client: TestClient) -> Iterator[None]:
    """The real app (the test database, the private Redis) in the slot for one test."""
    SLOT.app = client.app
    yield
    SLOT.app = None


@pytest.fixture
def admin(tokens: dict[str, str]) -> dict[str, str]:
    """An admin key may use every route, so each operation is reached past its auth check."""
    return {"Authorization": f"Bearer {tokens['admin']}"}


@schema.parametrize()
@settings(max_examples=25, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_app_keeps_its_spec(case: Case, served: None, admin: dict[str, str]) -> None:
    """Generated requests, valid and invalid, never get a 5xx, nor a status, header or body the document
    does not describe; a route that declares a key must refuse a request without one."""
    case.call_and_validate(headers=dict(admin))  # a copy: schemathesis adds to the dict it is given
