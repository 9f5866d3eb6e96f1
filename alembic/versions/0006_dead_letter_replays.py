"""Dead letters remember their replays: when one was last sent back through the queue, and how often.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

``dead_letters.replayed_at`` (NULL: never replayed) and ``dead_letters.replays`` (0 for every row
written before this revision) are written only by ``tagger dead-letters replay`` and
``POST /v1/dead-letters/replay`` (shared/db/dead_letters.py). A replayed event that dies again is
upserted onto the same row by the worker, which rewrites its reason and attempts and leaves these
two columns alone: the history of replays survives, and a second replay needs ``--force``.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.add_column(sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("replays", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.drop_column("replays")
        batch.drop_column("replayed_at")
