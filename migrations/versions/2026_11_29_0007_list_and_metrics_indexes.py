"""indexes for a job list filtered by status and for metrics read by epoch

`GET /v1/jobs?status=running` seeks (tenant_id, status, created_at, id) to the
page it wants, however many jobs the tenant has in other statuses, and
`GET /v1/jobs/{id}/metrics?since_epoch=` reads only the job's later epochs
through (job_id, epoch) instead of every point the job ever wrote.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 12:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_tenant_status_created",
            ["tenant_id", "status", "created_at", "id"],
            unique=False,
        )
    with op.batch_alter_table("metrics", schema=None) as batch_op:
        batch_op.create_index("ix_metrics_job_epoch", ["job_id", "epoch"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("metrics", schema=None) as batch_op:
        batch_op.drop_index("ix_metrics_job_epoch")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_tenant_status_created")
