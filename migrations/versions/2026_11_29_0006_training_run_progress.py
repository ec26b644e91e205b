"""which training run is going on, and the baseline's epoch

A distillation job trains its student first and then the no-KD baseline in one
stage. The job row names the run going on (`training_run`) and counts the
baseline's epochs beside the student's (`baseline_epoch`), so a status read
tells both runs' progress without reading metrics, and a cancelled or failed
job keeps the epochs that really ran.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 08:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("training_run", sa.String(16), nullable=True))
        batch_op.add_column(
            sa.Column("baseline_epoch", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("baseline_epoch")
        batch_op.drop_column("training_run")
