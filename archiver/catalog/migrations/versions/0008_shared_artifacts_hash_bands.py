"""Exact duplicates stored once, and a near-hash index (issue 28).

- ``content_key``: the SHA-256 of what decides an artifact (the original's SHA-256, rule, action,
  decision params, codec settings): a file whose key matches a committed row's shares that row's
  artifact instead of writing its own.
- ``artifact_of``: the id of the row that wrote the artifact this row shares (NULL: its own).
  The artifact's reference count is the number of rows that still need its ``compressed_path``
  (committed or in progress), counted through ``ix_file_versions_compressed_path``.
- ``phash_b0..3``: the pHash's four 16-bit bands, each leading an index that holds all four (so
  a lookup reads the index only: the pHash is the four bands), so ``archiver find`` looks up
  near hashes without scanning the catalog; filled here for rows that already have a pHash.

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BANDS = ("phash_b0", "phash_b1", "phash_b2", "phash_b3")


def band_index(b: str) -> list[str]:
    """The index led by band ``b``, covering the other three."""
    return [b] + [x for x in BANDS if x != b]


def _bands(h: str) -> list[int] | None:
    try:
        v = int(h, 16)
    except (TypeError, ValueError):
        return None
    return [(v >> (16 * (3 - i))) & 0xFFFF for i in range(4)]


def upgrade() -> None:
    with op.batch_alter_table("file_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("content_key", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("artifact_of", sa.Integer(), nullable=True))
        for b in BANDS:
            batch_op.add_column(sa.Column(b, sa.Integer(), nullable=True))
    op.create_index("ix_file_versions_content_key", "file_versions", ["content_key"])
    op.create_index("ix_file_versions_artifact_of", "file_versions", ["artifact_of"])
    op.create_index("ix_file_versions_compressed_path", "file_versions", ["compressed_path"])
    for b in BANDS:
        op.create_index(f"ix_file_versions_{b}", "file_versions", band_index(b), postgresql_include=["id"])
    conn = op.get_bind()
    fv = sa.table("file_versions", sa.column("id", sa.Integer), sa.column("phash", sa.String),
                  *(sa.column(b, sa.Integer) for b in BANDS))
    rows = conn.execute(sa.select(fv.c.id, fv.c.phash).where(fv.c.phash.is_not(None))).all()
    for fid, ph in rows:
        bands = _bands(ph)
        if bands is not None:
            conn.execute(fv.update().where(fv.c.id == fid).values(dict(zip(BANDS, bands))))


def downgrade() -> None:
    for b in BANDS:
        op.drop_index(f"ix_file_versions_{b}", table_name="file_versions")
    for ix in ("compressed_path", "artifact_of", "content_key"):
        op.drop_index(f"ix_file_versions_{ix}", table_name="file_versions")
    with op.batch_alter_table("file_versions", schema=None) as batch_op:
        for c in BANDS[::-1] + ("artifact_of", "content_key"):
            batch_op.drop_column(c)
