"""Each model tag's evidence: what share each input had, and what each input alone would say.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

``product_tags.evidence`` (JSONB on PostgreSQL, JSON elsewhere; NULL for human rows and rows written before this revision):
``{"shares": {"title": .7, "photo": .3}, "title_only": {"value": "Shirts", "score": .91},
"photo_only": {"value": "Tshirts", "score": .64}}`` — the head's gate weights for the tag's axis
and the single-input predictions. The new ``product_tags.reason`` value ``disagreement`` (title and
photo alone name different values) needs no constraint change. Written out in full, like 0001.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("product_tags") as batch:
        batch.add_column(sa.Column(
            "evidence", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("product_tags") as batch:
        batch.drop_column("evidence")
