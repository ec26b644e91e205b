"""when the reaper and the sweeper last ran

Every worker's heartbeat thread runs the reaper and the sweeper. Each pass
upserts the worker's own row for the task (`reaper`, `sweeper`), so the gateway's
/metrics can tell how long ago recovery last ran, whichever worker ran it; rows are
per worker so that no two workers ever wait on one row's lock.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 12:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "maintenance_runs",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("worker_id", sa.String(300), nullable=False),
        sa.PrimaryKeyConstraint("name", "worker_id", name=op.f("pk_maintenance_runs")),
    )


def downgrade() -> None:
    op.drop_table("maintenance_runs")
