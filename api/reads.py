"""Reads for downstream teams (search, recommendation): a product's tags, the products carrying a tag
(keyset-paged), and the taxonomy the live model knows. Role ``reader`` (or admin).

The same data is readable straight from Postgres; ``docs/READ-CONTRACT.md`` is the contract for both.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from api.auth import require
from api.errors import AUTH_ERRORS, InvalidParameter, NotFound, ServerFault, responses
from api.guards import GuardedRoute
from api.paging import NotAKey, decode_cursor, encode_cursor
from api.state import AppState, get_state
from shared.db.models import TAG_STATUSES, Product, ProductTag
from shared.db.session import session_scope
from shared.errors import ArtifactError
from shared.ml.manifest import MANIFEST, ModelManifest, parse_manifest, read_manifest
from shared.registry import artifact_prefix, live_version
from shared.storage import ObjectNotFound, open_store

log = logging.getLogger("tagger.api.reads")
router = APIRouter(prefix="/v1", tags=["reads"], route_class=GuardedRoute,
                   dependencies=[Depends(require("reader"))])

APPLIED_STATUSES = ("auto", "confirmed")  # the tags a product "has": the model's sure ones and human yeses
MAX_LIMIT = 1000


class SingleInput(BaseModel):
    """What one input alone would have said on the tag's axis: its top value and calibrated score."""

    value: str
    score: float


class TagEvidence(BaseModel):
    """Why the model named a tag (stored with it; null for human rows and tags written before)."""

    shares: dict[str, float] | None = Field(
        None, description="The share each input had in the decision on this axis ('title', 'photo'; "
        "they sum to 1): the fusion head's gate weights.")
    title_only: SingleInput | None = Field(
        None, description="The title alone's top value; only when the product had a title and a photo.")
    photo_only: SingleInput | None = Field(
        None, description="The photo alone's top value; only when the product had a title and a photo.")


class Tag(BaseModel):
    """One tag row of a product, model-proposed or human-decided."""

    axis: str
    value: str
    score: float
    status: str
    source: str
    model_version: str | None
    reason: str | None = Field(
        None, description="Why the tag is in the review queue beyond its score: 'out_of_domain' (the "
        "product is unlike the model's training data), 'contradiction' (it contradicted another applied "
        "tag of the product), 'disagreement' (the title alone and the photo alone named different "
        "values), 'one_input' (the product came with a title or a photo only, and that input alone is "
        "not precise enough on this axis), 'paused' (its value's auto-apply is switched off by the live "
        "audit), or "
        "'audit' (an APPLIED auto tag sampled for a person to check); null when the score alone decided. "
        "Kept after a person decides. New values may be added.")
    evidence: TagEvidence | None = Field(None, description="Why the model named it.")
    updated_at: datetime


class ProductTags(BaseModel):
    """Every tag row of one product; ``model_version`` is the model that last tagged the product."""

    product_id: str
    model_version: str | None
    novelty: float | None = Field(
        None, description="How unlike the model's training data the product looked at its last tagging "
        "(>= 1: out of domain, none of its tags was applied); null before the model measured it.")
    novelty_reason: str | None = Field(None, description="What made it novel, in words.")
    tags: list[Tag]


class TaggedProduct(BaseModel):
    """One product carrying the requested tag."""

    product_id: str
    score: float
    status: str
    model_version: str | None
    updated_at: datetime


class TaggedProductsPage(BaseModel):
    """One page, ordered by product_id; pass ``next_cursor`` as ``cursor`` for the next (null: done)."""

    items: list[TaggedProduct]
    next_cursor: str | None


class Axis(BaseModel):
    """An axis of the taxonomy: ``single`` (one value per product) or ``multi``, and its values."""

    kind: str
    values: list[str]


class Taxonomy(BaseModel):
    """The axes and values of the model the workers serve."""

    model_version: str
    axes: dict[str, Axis]


# --- GET /v1/products/{product_id}/tags ----------------------------------------------------------


@router.get("/products/{product_id}/tags", response_model=ProductTags,
            responses=responses(*AUTH_ERRORS, (404, "No product with this id has been tagged."), 422))
def product_tags(request: Request, product_id: str) -> ProductTags:
    """Every tag of a product (all statuses, both sources), by axis then highest score first."""
    with session_scope(get_state(request).settings.database_url) as session:
        product = session.get(Product, product_id)
        if product is None:
            raise NotFound(f"product {product_id!r} not found (never uploaded, or not tagged yet)")
        rows = session.scalars(
            sa.select(ProductTag).where(ProductTag.product_id == product_id)
            .order_by(ProductTag.axis, ProductTag.score.desc(), ProductTag.value)
        )
        return ProductTags(
            product_id=product.product_id, model_version=product.model_version,
            novelty=product.novelty, novelty_reason=product.novelty_reason,
            tags=[Tag(axis=t.axis, value=t.value, score=t.score, status=t.status, source=t.source,
                      model_version=t.model_version, reason=t.reason, evidence=t.evidence,
                      updated_at=t.updated_at)
                  for t in rows],
        )


# --- GET /v1/tags/{axis}/{value}/products --------------------------------------------------------


def _product_key(after: Any) -> str:
    """This route's cursor key: the last product_id of a page."""
    if not isinstance(after, str):
        raise NotAKey(after)
    return after


def _check_statuses(statuses: list[str]) -> list[str]:
    unknown = [s for s in statuses if s not in TAG_STATUSES]
    if unknown:
        raise InvalidParameter(
            f"unknown status {', '.join(repr(s) for s in unknown)} (parameter 'status'); "
            f"statuses are {', '.join(TAG_STATUSES)}", parameter="status",
        )
    return sorted(set(statuses))


@router.get(
    "/tags/{axis}/{value}/products", response_model=TaggedProductsPage,
    responses=responses((400, "The cursor was not one this API handed out."), *AUTH_ERRORS,
                        (422, "Unknown status, limit/min_score out of range, or a control "
                              "character in a parameter (named).")),
)
def tagged_products(
    request: Request, axis: str, value: str,
    status: Annotated[list[str] | None, Query(
        description=f"Tag statuses to include, of {', '.join(TAG_STATUSES)} (repeat the parameter); "
                    f"default: {', '.join(APPLIED_STATUSES)}."
    )] = None,
    min_score: Annotated[float | None, Query(ge=0.0, le=1.0, description="Lowest score to include.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
) -> TaggedProductsPage:
    """Products carrying ``axis=value``, ordered by product_id, paged with a keyset cursor."""
    statuses = _check_statuses(status) if status else list(APPLIED_STATUSES)
    after = decode_cursor(cursor, _product_key) if cursor is not None else None
    query = sa.select(ProductTag).where(
        ProductTag.axis == axis, ProductTag.value == value, ProductTag.status.in_(statuses)
    )
    if min_score is not None:
        query = query.where(ProductTag.score >= min_score)
    if after is not None:
        query = query.where(ProductTag.product_id > after)
    query = query.order_by(ProductTag.product_id).limit(limit + 1)  # one more: is there a next page?
    with session_scope(get_state(request).settings.database_url) as session:
        rows = list(session.scalars(query))
        items = [TaggedProduct(product_id=t.product_id, score=t.score, status=t.status,
                               model_version=t.model_version, updated_at=t.updated_at)
                 for t in rows[:limit]]
    more = len(rows) > limit
    return TaggedProductsPage(items=items, next_cursor=encode_cursor(items[-1].product_id) if more else None)


# --- GET /v1/taxonomy ----------------------------------------------------------------------------


def _taxonomy(manifest: ModelManifest) -> dict[str, Any]:
    """The public part of a manifest: its version and, per axis, kind and values (nothing else)."""
    axes = {name: Axis(kind=spec.kind, values=spec.values) for name, spec in manifest.axes.items()}
    return Taxonomy(model_version=manifest.version, axes=axes).model_dump()


def _live_taxonomy(state: AppState, version: str) -> dict[str, Any]:
    key = f"{artifact_prefix(version)}/{MANIFEST}"
    store = open_store(state.settings.object_store_url, state.settings)
    try:
        manifest = parse_manifest(store.get(key), store.uri(key))
    except ObjectNotFound:
        raise ServerFault(
            f"live model {version}: {store.uri(key)} is missing from the object store") from None
    except ArtifactError as exc:  # names the manifest's URI and the bad key
        raise ServerFault(f"live model {version}: {exc}") from None
    return _taxonomy(manifest)


def _default_taxonomy(model_dir: Path) -> dict[str, Any]:
    try:
        manifest = read_manifest(model_dir)
    except ArtifactError as exc:  # "<path>: unreadable manifest: ..." and the like
        raise ServerFault(f"default model {exc}") from None
    return _taxonomy(manifest)


@router.get("/taxonomy", response_model=Taxonomy,
            responses=responses(*AUTH_ERRORS, (500, "The served model's manifest is missing or unreadable.")))
def taxonomy(request: Request) -> dict[str, Any]:
    """Axes and values of the live registry version, or of the shipped model when none is live."""
    state = get_state(request)
    with session_scope(state.settings.database_url) as session:
        live = live_version(session)
        version = live.version if live is not None else None
    # A registered version's files never change, so its taxonomy is cached for the app's life;
    # the default model is keyed by its folder (it only changes with a deploy, i.e. a new process).
    key = f"live:{version}" if version is not None else f"dir:{state.settings.model_dir}"
    cached = state.taxonomy_cache.get(key)
    if cached is not None:
        return cached
    if version is not None:
        result = _live_taxonomy(state, version)
        if result["model_version"] != version:
            raise ServerFault(f"live model {version}: its manifest says version {result['model_version']}")
    else:
        result = _default_taxonomy(Path(state.settings.model_dir))
    with state.taxonomy_lock:
        state.taxonomy_cache.setdefault(key, result)
    log.info("taxonomy_loaded version=%s axes=%d", result["model_version"], len(result["axes"]))
    return result
