"""Tables of the tagger: products and their tags, auto switches, tagging events, dead letters, model versions,
API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shared.db.base import Base, utcnow

TAG_STATUSES = ("auto", "review", "confirmed", "rejected")
MODEL_TAG_STATUSES = ("auto", "review")
HUMAN_TAG_STATUSES = ("confirmed", "rejected")
TAG_SOURCES = ("model", "human")
# Why a model tag is 'review' although its score might have applied it: the product looked unlike
# anything the model was trained on, or the tag contradicted another applied tag of the product;
# or the live audit (shared/audit.py): 'audit' marks an applied ('auto') tag sampled for a person to
# check, 'paused' a tag held back because its value is switched off (auto_switches).
# JSONB on PostgreSQL: indexable, comparable (a JSON column cannot even be sorted), compact.
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
REVIEW_REASONS = ("out_of_domain", "contradiction", "disagreement", "one_input", "audit", "paused")
AUDIT_REASONS = ("audit", "paused")  # people's decisions on these rows measure live precision
EVENT_STATUSES = ("received", "tagged", "failed", "dead")
MODEL_VERSION_STATUSES = ("candidate", "live", "retired", "rejected")
API_KEY_ROLES = ("producer", "reader", "reviewer", "admin")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    """SQL for a CHECK that pins a text column to a fixed set (portable, unlike native enums)."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


AUDIT_ROWS = _one_of("reason", AUDIT_REASONS)  # the SQL predicate of the partial index below


class Product(Base):
    """One product as last uploaded; ``last_event_at`` orders uploads so a late redelivery cannot win."""

    __tablename__ = "products"

    product_id: Mapped[str] = mapped_column(primary_key=True)
    seller_id: Mapped[str]
    title: Mapped[str]
    description: Mapped[str | None]
    image_uri: Mapped[str | None]
    locale: Mapped[str | None]
    content_hash: Mapped[str]
    last_event_at: Mapped[datetime]
    model_version: Mapped[str | None]
    # The model's out-of-domain score at the last tagging (>= 1: nothing was auto-applied), and why.
    novelty: Mapped[float | None] = mapped_column(sa.Float())
    novelty_reason: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    tags: Mapped[list[ProductTag]] = relationship(
        back_populates="product", cascade="all, delete-orphan", passive_deletes=True
    )


class ProductTag(Base):
    """A tag on a product; ``source='human'`` rows are decisions the model never overwrites."""

    __tablename__ = "product_tags"
    __table_args__ = (
        sa.CheckConstraint(_one_of("status", TAG_STATUSES), name="status"),
        sa.CheckConstraint(_one_of("source", TAG_SOURCES), name="source"),
        # The model proposes (auto/review), a person decides (confirmed/rejected): the write paths
        # rely on source alone to know what they may replace.
        sa.CheckConstraint(
            f"(source = 'model' AND {_one_of('status', MODEL_TAG_STATUSES)})"
            f" OR (source = 'human' AND {_one_of('status', HUMAN_TAG_STATUSES)})",
            name="source_status",
        ),
        sa.Index(None, "axis", "value", "status"),
        # The live audit's rows (a small share of all): the review queue's audit part and the
        # evidence behind each switch read only these (shared/audit.py).
        sa.Index("ix_product_tags_audit", "axis", "value", "updated_at",
                 postgresql_where=sa.text(AUDIT_ROWS), sqlite_where=sa.text(AUDIT_ROWS)),
    )

    product_id: Mapped[str] = mapped_column(
        sa.ForeignKey("products.product_id", ondelete="CASCADE"), primary_key=True
    )
    axis: Mapped[str] = mapped_column(primary_key=True)
    value: Mapped[str] = mapped_column(primary_key=True)
    score: Mapped[float] = mapped_column(sa.Float())
    status: Mapped[str]
    source: Mapped[str]
    model_version: Mapped[str | None]
    # Why a model tag is 'review' beyond its score (one of REVIEW_REASONS); NULL: the score decided.
    reason: Mapped[str | None]
    # Why the model said so (migration 0005): input shares and single-input predictions; NULL for
    # human rows and older rows.
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON_DOC, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    product: Mapped[Product] = relationship(back_populates="tags")


class AutoSwitch(Base):
    """Whether the model may still auto-apply one (axis, value), from reviewers' decisions on its audit
    and paused tags (written by shared/audit.py only). No row: never audited, so enabled."""

    __tablename__ = "auto_switches"

    axis: Mapped[str] = mapped_column(primary_key=True)
    value: Mapped[str] = mapped_column(primary_key=True)
    enabled: Mapped[bool]
    n: Mapped[int]  # decisions in the window (the latest TAGGER_AUDIT_WINDOW)
    hits: Mapped[int]  # of them confirmed
    lower: Mapped[float] = mapped_column(sa.Float())  # one-sided 95% Clopper-Pearson bounds of hits / n
    upper: Mapped[float] = mapped_column(sa.Float())
    target: Mapped[float] = mapped_column(sa.Float())  # the target precision the switch was judged against
    reason: Mapped[str]  # the rule's verdict in words
    changed_at: Mapped[datetime | None]  # when ``enabled`` last flipped; NULL: never
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TaggingEvent(Base):
    """One ``product.uploaded`` event; keyed by event_id so a redelivery updates, never duplicates."""

    __tablename__ = "tagging_events"
    __table_args__ = (sa.CheckConstraint(_one_of("status", EVENT_STATUSES), name="status"),)

    event_id: Mapped[str] = mapped_column(primary_key=True)
    # No foreign key: a failure is recorded even when the product never got written.
    product_id: Mapped[str] = mapped_column(index=True)
    status: Mapped[str]
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None]
    image_error: Mapped[str | None]
    model_version: Mapped[str | None]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    # The event as the API accepted it, so the sweeper can re-enqueue one that never reached a worker;
    # NULL for events that arrived straight on the queue (the worker records those).
    payload: Mapped[dict[str, Any] | None]
    # When the API last handed the event to the broker; NULL = never (the broker was down).
    enqueued_at: Mapped[datetime | None]


class DeadLetter(Base):
    """A message given up on, kept verbatim with the reason; at most one row per event_id."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    # Nullable: a malformed message may carry no event_id (NULLs never collide in a unique index).
    event_id: Mapped[str | None] = mapped_column(unique=True)
    payload: Mapped[str]
    reason: Mapped[str]
    attempts: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Replays (migration 0006, shared/db/dead_letters.py): when the event was last sent back through the
    # queue (NULL: never) and how many times. A replayed event that dies again keeps both: the worker's
    # upsert rewrites only payload, reason and attempts.
    replayed_at: Mapped[datetime | None]
    replays: Mapped[int] = mapped_column(default=0, server_default="0")


class ModelVersion(Base):
    """A registered model artifact and where it is in its life: candidate, live, retired or rejected."""

    __tablename__ = "model_versions"
    __table_args__ = (
        sa.CheckConstraint(_one_of("status", MODEL_VERSION_STATUSES), name="status"),
        # Workers hot-swap to "the live model": two live rows would make that ambiguous. Promote by
        # retiring the old row first, then marking the new one live, in one transaction.
        sa.Index("ix_model_versions_one_live", "status", unique=True,
                 postgresql_where=sa.text("status = 'live'"), sqlite_where=sa.text("status = 'live'")),
    )

    version: Mapped[str] = mapped_column(primary_key=True)
    uri: Mapped[str]
    status: Mapped[str]
    parent_version: Mapped[str | None]
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    label_watermark: Mapped[datetime | None]
    reason: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    promoted_at: Mapped[datetime | None]


class ApiKey(Base):
    """An HTTP API key: the public ``id`` names it, only a hash of its secret is stored."""

    __tablename__ = "api_keys"
    __table_args__ = (sa.CheckConstraint(_one_of("role", API_KEY_ROLES), name="role"),)

    id: Mapped[str] = mapped_column(primary_key=True)
    name: Mapped[str]
    role: Mapped[str]
    # sha256 hex of the secret. Secrets are 32 random bytes, so there is nothing to brute-force and a
    # slow password hash (bcrypt, argon2) would only add latency to every request.
    key_hash: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
