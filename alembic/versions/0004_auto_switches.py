"""The live audit's switch per (axis, value): may the model still auto-apply it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

``auto_switches`` holds, per value that reviewers have judged audit or paused tags of, the live
precision evidence (``n`` decisions in the window, ``hits`` confirmed, one-sided 95%
Clopper–Pearson ``lower``/``upper`` bounds, the ``target`` it was judged against) and the verdict
(``enabled``, ``reason``, ``changed_at``). The new ``product_tags.reason`` values ``audit`` and
``paused`` need no constraint change (the column is free text); ``ix_product_tags_audit`` is a partial
index on the rows that carry them. Written out in full, like 0001.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "auto_switches",
        sa.Column("axis", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("lower", sa.Float(), nullable=False),
        sa.Column("upper", sa.Float(), nullable=False),
        sa.Column("target", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("axis", "value", name=op.f("pk_auto_switches")),
    )
    # The audit's rows are a small share of product_tags: the review queue's audit part and each
    # switch's evidence read only them.
    audit_rows = sa.text("reason IN ('audit', 'paused')")
    op.create_index("ix_product_tags_audit", "product_tags", ["axis", "value", "updated_at"], unique=False,
                    postgresql_where=audit_rows, sqlite_where=audit_rows)


def downgrade() -> None:
    op.drop_index("ix_product_tags_audit", table_name="product_tags")
    op.drop_table("auto_switches")
