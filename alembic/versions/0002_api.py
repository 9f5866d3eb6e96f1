"""HTTP API: api_keys, and the accepted event kept on tagging_events so nothing accepted is lost.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Written out in full (no imports from the application), like 0001. Constraint names follow
shared.db.base.NAMING_CONVENTION.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        # sha256 of a 32-byte random secret: unguessable input needs no slow password hash.
        sa.Column("key_hash", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('producer', 'reader', 'reviewer', 'admin')",
                           name=op.f("ck_api_keys_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
    )
    with op.batch_alter_table("tagging_events") as batch:
        batch.add_column(sa.Column("payload", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tagging_events") as batch:
        batch.drop_column("enqueued_at")
        batch.drop_column("payload")
    op.drop_table("api_keys")
