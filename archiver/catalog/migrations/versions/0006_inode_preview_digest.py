"""The original's inode (so the removal gate knows the very file that was archived, not only its
content), its directory's resolved path (so an in-place restore writes only where the file was,
never through a link put there since) and the preview's SHA-256 (so archiver replaces or deletes
only a preview it wrote).

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("file_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("inode", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("real_parent", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("preview_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("file_versions", schema=None) as batch_op:
        batch_op.drop_column("preview_sha256")
        batch_op.drop_column("real_parent")
        batch_op.drop_column("inode")
