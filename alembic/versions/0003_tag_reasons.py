"""Why a model tag is left for review, and how novel the product looked to the model.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

``products.novelty``: the model's out-of-domain score for the product's last tagging (>= 1: outside
what it was trained on, so none of its tags was applied), with ``novelty_reason`` in words.
``product_tags.reason``: why a model tag is ``review`` beyond its score (``out_of_domain``,
``contradiction``); NULL when the score alone decided. Written out in full, like 0001.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("products") as batch:
        batch.add_column(sa.Column("novelty", sa.Float(), nullable=True))
        batch.add_column(sa.Column("novelty_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("product_tags") as batch:
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("product_tags") as batch:
        batch.drop_column("reason")
    with op.batch_alter_table("products") as batch:
        batch.drop_column("novelty_reason")
        batch.drop_column("novelty")
