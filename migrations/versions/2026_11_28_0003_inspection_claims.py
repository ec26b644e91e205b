"""inspection claims on uploads

An upload's inspection is claimed like a job stage: a lease, a heartbeat and
a count of started attempts, so a worker that dies mid-inspection is noticed
and the file is re-inspected, or marked invalid once it has stopped the
inspector `max_inspect_attempts` times.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 12:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("models", "datasets")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            # server_default fills the rows already there; new rows get the model's default.
            batch_op.add_column(
                sa.Column("inspect_attempts", sa.Integer(), nullable=False, server_default="0")
            )
            batch_op.add_column(sa.Column("inspect_lease", sa.String(length=36), nullable=True))
            batch_op.add_column(
                sa.Column("inspect_heartbeat_at", sa.DateTime(timezone=True), nullable=True)
            )


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("inspect_heartbeat_at")
            batch_op.drop_column("inspect_lease")
            batch_op.drop_column("inspect_attempts")
