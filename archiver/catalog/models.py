"""Catalog tables (SQLAlchemy 2.x declarative).

The catalog is the source of truth for what happened to every file: one ``FileVersion`` row per
version of a file (a file that changes later gets a new row), its ``Event`` history (append-only),
``Tag`` rows per path (e.g. ``legal-hold``) and the service's persistent ``WorkQueue``.
Timestamps are naive UTC (``utcnow()``) so SQLite and PostgreSQL compare them the same way.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import (JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text,
                        UniqueConstraint, event, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from .. import likeness


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


# -- states -----------------------------------------------------------------------------------
DISCOVERED, CLASSIFIED, ENCODED, VERIFIED = "discovered", "classified", "encoded", "verified"
COMMITTED, SKIPPED, FAILED = "committed", "skipped", "failed"
#: an operator's `archiver forget`: the row and its events stay for audit; verify, restore and
#: stats no longer count it (see archiver/work/forget.py)
FORGOTTEN = "forgotten"
STATES = (DISCOVERED, CLASSIFIED, ENCODED, VERIFIED, COMMITTED, SKIPPED, FAILED, FORGOTTEN)
IN_PROGRESS = (DISCOVERED, CLASSIFIED, ENCODED, VERIFIED)
TERMINAL = (COMMITTED, SKIPPED, FAILED)

#: allowed transitions; any in-progress state may also go back to ``discovered`` (crash rollback),
#: ``encoded``/``verified`` back to ``classified`` (quality-guard fallback to lossless), and
#: ``skipped``/``failed`` to ``discovered`` when the file is tried again.
TRANSITIONS: dict[Optional[str], tuple[str, ...]] = {
    None: (DISCOVERED, SKIPPED, FAILED),
    DISCOVERED: (DISCOVERED, CLASSIFIED, SKIPPED, FAILED),
    CLASSIFIED: (DISCOVERED, CLASSIFIED, ENCODED, COMMITTED, SKIPPED, FAILED),
    ENCODED: (DISCOVERED, CLASSIFIED, VERIFIED, SKIPPED, FAILED),
    VERIFIED: (DISCOVERED, CLASSIFIED, COMMITTED, SKIPPED, FAILED),
    # afterwards only the original's disposition / vault fields change, except that a version whose
    # replacement was lost before its original could be removed is not archived after all: failed
    COMMITTED: (COMMITTED, FAILED, FORGOTTEN),
    SKIPPED: (DISCOVERED, FORGOTTEN),  # retry: the file changed, or a new attempt
    FAILED: (DISCOVERED, FORGOTTEN),
    FORGOTTEN: (FORGOTTEN,),  # afterwards only its vault fields change (vault expiry)
}

# what became of the original file
ORIG_PRESENT, ORIG_REMOVED, ORIG_KEPT = "present", "removed", "kept"


#: the largest id the catalog's ``Integer`` primary keys hold on every backend (PostgreSQL's
#: ``integer`` is 32 bits); a bigger id names no row, and is refused before it reaches the database
MAX_ID = 2**31 - 1


class FileVersion(Base):
    __tablename__ = "file_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, nullable=False)
    root: Mapped[Optional[str]] = mapped_column(Text)
    # the original
    size: Mapped[Optional[int]] = mapped_column(BigInteger)
    mtime_ns: Mapped[Optional[int]] = mapped_column(BigInteger)
    mode: Mapped[Optional[int]] = mapped_column(Integer)  # permission bits, given back on restore
    uid: Mapped[Optional[int]] = mapped_column(Integer)
    gid: Mapped[Optional[int]] = mapped_column(Integer)
    #: the inode read at discovery: the removal gate removes only this very file (migration 0006)
    inode: Mapped[Optional[int]] = mapped_column(BigInteger)
    #: its directory as resolved at discovery: an in-place restore writes only there (migration 0006)
    real_parent: Mapped[Optional[str]] = mapped_column(Text)
    sha256: Mapped[Optional[str]] = mapped_column(String(64))
    phash: Mapped[Optional[str]] = mapped_column(String(64))
    dhash: Mapped[Optional[str]] = mapped_column(String(64))
    #: the pHash's four 16-bit bands, each indexed (migration 0008): ``archiver find`` looks up
    #: near hashes through them, never scanning the catalog (kept in step with ``phash`` below)
    phash_b0: Mapped[Optional[int]] = mapped_column(Integer)
    phash_b1: Mapped[Optional[int]] = mapped_column(Integer)
    phash_b2: Mapped[Optional[int]] = mapped_column(Integer)
    phash_b3: Mapped[Optional[int]] = mapped_column(Integer)
    format: Mapped[Optional[str]] = mapped_column(String(16))
    width: Mapped[Optional[int]] = mapped_column(Integer)
    height: Mapped[Optional[int]] = mapped_column(Integer)
    # classification
    policy: Mapped[Optional[str]] = mapped_column(Text)
    rule: Mapped[Optional[str]] = mapped_column(String(200))
    classification: Mapped[Optional[Any]] = mapped_column(JSON)  # evidence per classifier
    reasons: Mapped[Optional[Any]] = mapped_column(JSON)
    action: Mapped[Optional[str]] = mapped_column(String(16))  # diffusion | lossless | keep
    params: Mapped[Optional[Any]] = mapped_column(JSON)
    # the compressed replacement
    codec: Mapped[Optional[str]] = mapped_column(String(32))  # a registry name: diffusion | lossless | avif | jxl
    codec_version: Mapped[Optional[int]] = mapped_column(Integer)  # the codec's artifact format version
    codec_params: Mapped[Optional[Any]] = mapped_column(JSON)  # settings chosen for this file (quality, t...)
    backbone: Mapped[Optional[str]] = mapped_column(String(64))
    backbone_digest: Mapped[Optional[str]] = mapped_column(String(64))
    compressed_path: Mapped[Optional[str]] = mapped_column(Text)
    #: exact duplicates stored once (migration 0008): what decides the artifact (the original's
    #: SHA-256, rule, action, params, codec settings), and the id of the row whose artifact this
    #: row shares (None: its own). A sharing row records ``compressed_size`` 0: the bytes it adds.
    #: The artifact's reference count is the rows that still name its ``compressed_path``
    #: (``queries.artifact_refs``); nothing removes it while one does.
    content_key: Mapped[Optional[str]] = mapped_column(String(64))
    artifact_of: Mapped[Optional[int]] = mapped_column(Integer)
    compressed_size: Mapped[Optional[int]] = mapped_column(BigInteger)
    bpp: Mapped[Optional[float]] = mapped_column(Float)
    compressed_sha256: Mapped[Optional[str]] = mapped_column(String(64))
    reconstruction_sha256: Mapped[Optional[str]] = mapped_column(String(64))
    restore_exact: Mapped[Optional[str]] = mapped_column(String(16))  # bytes | pixels | approx
    psnr: Mapped[Optional[float]] = mapped_column(Float)
    ms_ssim: Mapped[Optional[float]] = mapped_column(Float)
    region_psnr: Mapped[Optional[float]] = mapped_column(Float)
    #: what a person would see (migration 0007): the perceptual score of the file as verified, the
    #: lowest of its protected regions', the metric and version that gave them, the rule's target
    score: Mapped[Optional[float]] = mapped_column(Float)
    region_score: Mapped[Optional[float]] = mapped_column(Float)
    score_metric: Mapped[Optional[str]] = mapped_column(String(64))
    target_score: Mapped[Optional[float]] = mapped_column(Float)
    #: every codec the search tried: codec, knob, bytes, score, and why the others lost
    candidates: Mapped[Optional[Any]] = mapped_column(JSON)
    # state and what became of the original
    state: Mapped[str] = mapped_column(String(16), nullable=False, default=DISCOVERED)
    disposition: Mapped[Optional[str]] = mapped_column(String(16))  # replace | vault | keep
    original_status: Mapped[Optional[str]] = mapped_column(String(16))  # present | removed | kept
    vault_path: Mapped[Optional[str]] = mapped_column(Text)
    vault_expires_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    #: the small standard image (WebP/AVIF) written for file browsers (config ``preview:``)
    preview_path: Mapped[Optional[str]] = mapped_column(Text)
    #: what archiver wrote there: a preview is replaced or deleted only while it still has this digest
    preview_sha256: Mapped[Optional[str]] = mapped_column(String(64))
    error: Mapped[Optional[str]] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow, onupdate=utcnow)
    committed_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)

    events: Mapped[list["Event"]] = relationship(back_populates="file", order_by="Event.id")

    __table_args__ = (
        Index("ix_file_versions_path", "path"),
        Index("ix_file_versions_state", "state"),
        Index("ix_file_versions_sha256", "sha256"),
        # migration 0008: shared artifacts (dedup key, owner, reference count) and the pHash bands
        Index("ix_file_versions_content_key", "content_key"),
        Index("ix_file_versions_artifact_of", "artifact_of"),
        Index("ix_file_versions_compressed_path", "compressed_path"),
        # each band leads an index holding all four (and the id: SQLite's rowid is in every index,
        # PostgreSQL's is included): a near lookup reads only the indexes
        Index("ix_file_versions_phash_b0", "phash_b0", "phash_b1", "phash_b2", "phash_b3", postgresql_include=["id"]),
        Index("ix_file_versions_phash_b1", "phash_b1", "phash_b0", "phash_b2", "phash_b3", postgresql_include=["id"]),
        Index("ix_file_versions_phash_b2", "phash_b2", "phash_b0", "phash_b1", "phash_b3", postgresql_include=["id"]),
        Index("ix_file_versions_phash_b3", "phash_b3", "phash_b0", "phash_b1", "phash_b2", postgresql_include=["id"]),
        # the dashboard (migration 0004): keyset pages per filter, and covering indexes for the
        # overview's sums (per rule/codec/day, per top folder, the vault per expiry day)
        Index("ix_file_versions_rule_id", "rule", "id"),
        Index("ix_file_versions_codec_id", "codec", "id"),
        Index("ix_file_versions_state_id", "state", "id"),
        Index("ix_file_versions_updated_at", "updated_at"),
        Index("ix_file_versions_overview", "state", "rule", "codec", "committed_at", "original_status", "size",
              "compressed_size"),
        Index("ix_file_versions_folders", "state", "root", "path", "original_status", "size", "compressed_size"),
        Index("ix_file_versions_vault", "vault_expires_at", "size", sqlite_where=text("vault_path IS NOT NULL"),
              postgresql_where=text("vault_path IS NOT NULL")),
    )

    def to_dict(self) -> dict:
        return {c.name: getattr(self, c.name) for c in self.__table__.columns}


@event.listens_for(FileVersion, "before_insert")
@event.listens_for(FileVersion, "before_update")
def _phash_bands(mapper, connection, target):
    """The bands always match ``phash`` (whoever sets it)."""
    for i, b in enumerate(likeness.bands(target.phash)):
        setattr(target, f"phash_b{i}", b)


class Event(Base):
    """Append-only history: every state transition writes one in the same transaction."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    file_id: Mapped[Optional[int]] = mapped_column(ForeignKey("file_versions.id", ondelete="RESTRICT"))
    path: Mapped[Optional[str]] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    from_state: Mapped[Optional[str]] = mapped_column(String(16))
    to_state: Mapped[Optional[str]] = mapped_column(String(16))
    detail: Mapped[Optional[Any]] = mapped_column(JSON)

    file: Mapped[Optional[FileVersion]] = relationship(back_populates="events")

    __table_args__ = (Index("ix_events_file_id", "file_id"), Index("ix_events_at", "at"),
                      Index("ix_events_kind_id", "kind", "id"))

    def to_dict(self) -> dict:
        return {c.name: getattr(self, c.name) for c in self.__table__.columns}


@event.listens_for(Event, "before_update")
@event.listens_for(Event, "before_delete")
def _events_are_append_only(mapper, connection, target):  # pragma: no cover - a programming error
    raise RuntimeError("the event log is append-only")


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, nullable=False)
    tag: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)

    __table_args__ = (UniqueConstraint("path", "tag", name="uq_tags_path_tag"), Index("ix_tags_tag", "tag"))


class SharedPlace(Base):
    """A root or vault used by several nodes: the id in its marker file, as the first node saw it
    (logic lives in archiver/service/places.py)."""

    __tablename__ = "shared_places"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # root | vault
    mark: Mapped[str] = mapped_column(String(64), nullable=False)
    node: Mapped[Optional[str]] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)


# queue states (logic lives in archiver/catalog/queue.py)
Q_PENDING, Q_CLAIMED, Q_DONE, Q_FAILED = "pending", "claimed", "done", "failed"


class WorkQueue(Base):
    """Persistent work queue for the daemon (survives restarts); one row per path."""

    __tablename__ = "work_queue"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    root: Mapped[Optional[str]] = mapped_column(Text)
    enqueued_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    not_before: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    state: Mapped[str] = mapped_column(String(16), nullable=False, default=Q_PENDING)
    claimed_by: Mapped[Optional[str]] = mapped_column(String(200))
    claimed_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    last_error: Mapped[Optional[str]] = mapped_column(Text)

    __table_args__ = (Index("ix_work_queue_state_not_before", "state", "not_before"),)
