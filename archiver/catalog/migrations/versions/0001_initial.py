"""Initial schema: file versions, append-only events, tags, work queue.

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 17:50:36.895004
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('file_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('root', sa.Text(), nullable=True),
    sa.Column('size', sa.BigInteger(), nullable=True),
    sa.Column('mtime_ns', sa.BigInteger(), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('phash', sa.String(length=64), nullable=True),
    sa.Column('dhash', sa.String(length=64), nullable=True),
    sa.Column('format', sa.String(length=16), nullable=True),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('policy', sa.Text(), nullable=True),
    sa.Column('rule', sa.String(length=200), nullable=True),
    sa.Column('classification', sa.JSON(), nullable=True),
    sa.Column('reasons', sa.JSON(), nullable=True),
    sa.Column('action', sa.String(length=16), nullable=True),
    sa.Column('params', sa.JSON(), nullable=True),
    sa.Column('codec', sa.String(length=32), nullable=True),
    sa.Column('backbone', sa.String(length=64), nullable=True),
    sa.Column('backbone_digest', sa.String(length=64), nullable=True),
    sa.Column('compressed_path', sa.Text(), nullable=True),
    sa.Column('compressed_size', sa.BigInteger(), nullable=True),
    sa.Column('bpp', sa.Float(), nullable=True),
    sa.Column('compressed_sha256', sa.String(length=64), nullable=True),
    sa.Column('reconstruction_sha256', sa.String(length=64), nullable=True),
    sa.Column('restore_exact', sa.String(length=16), nullable=True),
    sa.Column('psnr', sa.Float(), nullable=True),
    sa.Column('ms_ssim', sa.Float(), nullable=True),
    sa.Column('region_psnr', sa.Float(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('disposition', sa.String(length=16), nullable=True),
    sa.Column('original_status', sa.String(length=16), nullable=True),
    sa.Column('vault_path', sa.Text(), nullable=True),
    sa.Column('vault_expires_at', sa.DateTime(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('committed_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('file_versions', schema=None) as batch_op:
        batch_op.create_index('ix_file_versions_path', ['path'], unique=False)
        batch_op.create_index('ix_file_versions_sha256', ['sha256'], unique=False)
        batch_op.create_index('ix_file_versions_state', ['state'], unique=False)

    op.create_table('tags',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('tag', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('path', 'tag', name='uq_tags_path_tag')
    )
    with op.batch_alter_table('tags', schema=None) as batch_op:
        batch_op.create_index('ix_tags_tag', ['tag'], unique=False)

    op.create_table('work_queue',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('root', sa.Text(), nullable=True),
    sa.Column('enqueued_at', sa.DateTime(), nullable=False),
    sa.Column('not_before', sa.DateTime(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('claimed_by', sa.String(length=200), nullable=True),
    sa.Column('claimed_at', sa.DateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('path')
    )
    with op.batch_alter_table('work_queue', schema=None) as batch_op:
        batch_op.create_index('ix_work_queue_state_not_before', ['state', 'not_before'], unique=False)

    op.create_table('events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('file_id', sa.Integer(), nullable=True),
    sa.Column('path', sa.Text(), nullable=True),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('from_state', sa.String(length=16), nullable=True),
    sa.Column('to_state', sa.String(length=16), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['file_id'], ['file_versions.id'], ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_at', ['at'], unique=False)
        batch_op.create_index('ix_events_file_id', ['file_id'], unique=False)

    # the event log is append-only in the database too, not only in the ORM
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for what in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER events_no_{what.lower()} BEFORE {what} ON events "
                       "BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END")
    elif dialect == "postgresql":
        op.execute("CREATE FUNCTION archiver_events_append_only() RETURNS trigger AS $$ "
                   "BEGIN RAISE EXCEPTION 'the event log is append-only'; END $$ LANGUAGE plpgsql")
        op.execute("CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events "
                   "FOR EACH ROW EXECUTE FUNCTION archiver_events_append_only()")



def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS events_no_update")
        op.execute("DROP TRIGGER IF EXISTS events_no_delete")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS events_append_only ON events")
        op.execute("DROP FUNCTION IF EXISTS archiver_events_append_only()")
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_file_id')
        batch_op.drop_index('ix_events_at')

    op.drop_table('events')
    with op.batch_alter_table('work_queue', schema=None) as batch_op:
        batch_op.drop_index('ix_work_queue_state_not_before')

    op.drop_table('work_queue')
    with op.batch_alter_table('tags', schema=None) as batch_op:
        batch_op.drop_index('ix_tags_tag')

    op.drop_table('tags')
    with op.batch_alter_table('file_versions', schema=None) as batch_op:
        batch_op.drop_index('ix_file_versions_state')
        batch_op.drop_index('ix_file_versions_sha256')
        batch_op.drop_index('ix_file_versions_path')

    op.drop_table('file_versions')
