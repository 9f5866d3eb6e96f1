"""Initial schema: products, product_tags, tagging_events, dead_letters, model_versions.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

Written out in full (no imports from the application) so later model changes cannot alter
what this revision builds. Constraint names follow shared.db.base.NAMING_CONVENTION.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("product_id", sa.Text(), nullable=False),
        sa.Column("seller_id", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("image_uri", sa.Text(), nullable=True),
        sa.Column("locale", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.Text(), nullable=False),
        _ts("last_event_at"),
        sa.Column("model_version", sa.Text(), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("product_id", name=op.f("pk_products")),
    )
    op.create_table(
        "product_tags",
        sa.Column("product_id", sa.Text(), nullable=False),
        sa.Column("axis", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("model_version", sa.Text(), nullable=True),
        _ts("updated_at"),
        sa.CheckConstraint("status IN ('auto', 'review', 'confirmed', 'rejected')",
                           name=op.f("ck_product_tags_status")),
        sa.CheckConstraint("source IN ('model', 'human')", name=op.f("ck_product_tags_source")),
        sa.CheckConstraint(
            "(source = 'model' AND status IN ('auto', 'review'))"
            " OR (source = 'human' AND status IN ('confirmed', 'rejected'))",
            name=op.f("ck_product_tags_source_status"),
        ),
        sa.ForeignKeyConstraint(["product_id"], ["products.product_id"], ondelete="CASCADE",
                                name=op.f("fk_product_tags_product_id_products")),
        sa.PrimaryKeyConstraint("product_id", "axis", "value", name=op.f("pk_product_tags")),
    )
    op.create_index(op.f("ix_product_tags_axis_value_status"), "product_tags",
                    ["axis", "value", "status"], unique=False)
    op.create_table(
        "tagging_events",
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("product_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("image_error", sa.Text(), nullable=True),
        sa.Column("model_version", sa.Text(), nullable=True),
        _ts("received_at"),
        _ts("finished_at", nullable=True),
        sa.CheckConstraint("status IN ('received', 'tagged', 'failed', 'dead')",
                           name=op.f("ck_tagging_events_status")),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_tagging_events")),
    )
    op.create_index(op.f("ix_tagging_events_product_id"), "tagging_events", ["product_id"], unique=False)
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.Text(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
        sa.UniqueConstraint("event_id", name=op.f("uq_dead_letters_event_id")),
    )
    op.create_table(
        "model_versions",
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("parent_version", sa.Text(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        _ts("label_watermark", nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        _ts("created_at"),
        _ts("promoted_at", nullable=True),
        sa.CheckConstraint("status IN ('candidate', 'live', 'retired', 'rejected')",
                           name=op.f("ck_model_versions_status")),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_model_versions")),
    )
    op.create_index("ix_model_versions_one_live", "model_versions", ["status"], unique=True,
                    postgresql_where=sa.text("status = 'live'"), sqlite_where=sa.text("status = 'live'"))


def downgrade() -> None:
    op.drop_index("ix_model_versions_one_live", table_name="model_versions")
    op.drop_table("model_versions")
    op.drop_table("dead_letters")
    op.drop_index(op.f("ix_tagging_events_product_id"), table_name="tagging_events")
    op.drop_table("tagging_events")
    op.drop_index(op.f("ix_product_tags_axis_value_status"), table_name="product_tags")
    op.drop_table("product_tags")
    op.drop_table("products")
