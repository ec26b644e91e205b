"""dataset formats and teacher tensors

A dataset keeps the options it was uploaded with (the label column of a CSV or
Parquet file, the image size of an image-folder zip) and, once inspected, the
keys of its arrays in the canonical memory-mappable form every stage reads.
A model lists the named intermediate tensors of its ONNX graph, which a
feature-level loss may ask the teacher for.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 02:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("options", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("arrays", sa.JSON(), nullable=True))
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tensors", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("tensors")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("arrays")
        batch_op.drop_column("options")
