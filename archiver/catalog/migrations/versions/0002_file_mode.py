"""Permission bits and owner of the original, so compressed files and restores keep them.

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("file_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mode", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("uid", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("gid", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("file_versions", schema=None) as batch_op:
        batch_op.drop_column("gid")
        batch_op.drop_column("uid")
        batch_op.drop_column("mode")
