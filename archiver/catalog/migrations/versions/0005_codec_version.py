"""Codecs by registry name and version: ``codec_version`` and ``codec_params`` on file versions,
and the old per-format codec names rewritten to the registry's ('dlc' -> 'diffusion',
'jxl-jpeg' / 'axl' -> 'lossless'), so ``codecs.codec_for(row)`` opens every archived file.

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

#: codec names written before the registry -> the registry's
RENAMED = {"dlc": "diffusion", "fake": "diffusion", "jxl-jpeg": "lossless", "axl": "lossless"}


def upgrade() -> None:
    with op.batch_alter_table("file_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("codec_version", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("codec_params", sa.JSON(), nullable=True))
    fv = sa.table("file_versions", sa.column("codec", sa.String), sa.column("codec_version", sa.Integer))
    for old, new in RENAMED.items():
        op.execute(fv.update().where(fv.c.codec == old).values(codec=new, codec_version=1))


def downgrade() -> None:
    fv = sa.table("file_versions", sa.column("codec", sa.String), sa.column("compressed_path", sa.Text))
    op.execute(fv.update().where(fv.c.codec == "diffusion").values(codec="dlc"))
    op.execute(fv.update().where((fv.c.codec == "lossless") & fv.c.compressed_path.like("%.jxl")).values(codec="jxl-jpeg"))
    op.execute(fv.update().where(fv.c.codec == "lossless").values(codec="axl"))
    with op.batch_alter_table("file_versions", schema=None) as batch_op:
        batch_op.drop_column("codec_params")
        batch_op.drop_column("codec_version")
