"""What a lossy file was judged by (issue 23): its perceptual score (SSIMULACRA2) and the lowest
of its protected regions', the metric and version that gave them, the rule's target, and every
candidate the search tried (codec, knob, bytes, score; why the others lost).

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("file_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("score", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("region_score", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("score_metric", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("target_score", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("candidates", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("file_versions", schema=None) as batch_op:
        for c in ("candidates", "target_score", "score_metric", "region_score", "score"):
            batch_op.drop_column(c)
