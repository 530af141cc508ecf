"""Indexes for the dashboard's browser and overview, and where a file's preview image is.

The browser pages through hundreds of thousands of rows by id (keyset pagination) filtered by
rule, codec or state, so each filter gets a (column, id) index; the overview groups committed
rows by day and the vault by expiry day; the failures panel reads events by kind.

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FILE_INDEXES = {
    "ix_file_versions_rule_id": ["rule", "id"],
    "ix_file_versions_codec_id": ["codec", "id"],
    "ix_file_versions_state_id": ["state", "id"],
    "ix_file_versions_updated_at": ["updated_at"],
    "ix_file_versions_committed_at": ["committed_at"],
    "ix_file_versions_vault_expires_at": ["vault_expires_at"],
}


def upgrade() -> None:
    with op.batch_alter_table("file_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("preview_path", sa.Text(), nullable=True))
    for name, cols in FILE_INDEXES.items():
        op.create_index(name, "file_versions", cols)
    op.create_index("ix_events_kind_id", "events", ["kind", "id"])


def downgrade() -> None:
    op.drop_index("ix_events_kind_id", table_name="events")
    for name in FILE_INDEXES:
        op.drop_index(name, table_name="file_versions")
    with op.batch_alter_table("file_versions", schema=None) as batch_op:
        batch_op.drop_column("preview_path")
