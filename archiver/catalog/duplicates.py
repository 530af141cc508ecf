"""Duplicates in the catalog (issue 28): shared artifacts and their reference count, and near
hashes looked up through the pHash bands (``archiver.likeness``), never by scanning the catalog.

An artifact written for one row may be named by other rows with the same ``content_key`` (exact
copies of the original, same rule and codec settings; ``artifact_of`` names the row that wrote
it). Its reference count is the number of rows that still need its ``compressed_path``: committed
or in progress. Nothing removes an artifact while that count, other rows than the one letting
go, is above zero (``artifact_refs``)."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Optional

from sqlalchemy import cast, func, select, text, union_all
from sqlalchemy.dialects.postgresql import BIT
from sqlalchemy.orm import Session

from .. import likeness
from .models import COMMITTED, FORGOTTEN, IN_PROGRESS, FileVersion

#: the states in which a row needs its artifact
NEEDS_ARTIFACT = (COMMITTED, *IN_PROGRESS)


def artifact_refs(s: Session, compressed_path: str | None, *, excluding: int | None = None) -> int:
    """How many rows (other than ``excluding``) still need the artifact at ``compressed_path``."""
    if not compressed_path:
        return 0
    q = select(func.count()).select_from(FileVersion).where(FileVersion.compressed_path == compressed_path,
                                                            FileVersion.state.in_(NEEDS_ARTIFACT))
    if excluding is not None:
        q = q.where(FileVersion.id != excluding)
    return int(s.scalar(q) or 0)


def shared_counts(s: Session) -> dict:
    """Committed exact copies that share another row's stored file (they add no artifact bytes),
    and how many stored files they share."""
    F = FileVersion
    n, files = s.execute(select(func.count(), func.count(func.distinct(F.compressed_path)))
                         .where(F.state == COMMITTED, F.artifact_of.is_not(None))).one()
    return {"files": int(n or 0), "stored_files": int(files or 0)}


def shareable(s: Session, content_key: str, limit: int = 3) -> list[FileVersion]:
    """Committed rows with ``content_key`` and an artifact, one per artifact, oldest first: the
    ones a copy may share (the caller reads each back before it does)."""
    rows = s.scalars(select(FileVersion).where(FileVersion.content_key == content_key, FileVersion.state == COMMITTED,
                                                FileVersion.compressed_path.is_not(None))
                     .order_by(FileVersion.id).limit(20))
    out, seen = [], set()
    for r in rows:
        if r.compressed_path not in seen:
            seen.add(r.compressed_path)
            out.append(r)
    return out[:limit]


def owner_holds(s: Session, owner_id: int, compressed_path: str, compressed_sha256: str) -> bool:
    """Whether row ``owner_id`` is still committed with that very artifact (checked in the
    transaction that commits a row sharing it)."""
    r = s.get(FileVersion, owner_id)
    return r is not None and r.state == COMMITTED and r.compressed_path == compressed_path \
        and r.compressed_sha256 == compressed_sha256


def hand_over(s: Session, row: FileVersion) -> Optional[FileVersion]:
    """``row`` stops needing its artifact (forgotten): when it wrote it and others still share it,
    the oldest of them becomes its owner (its ``compressed_size`` the artifact's, so the bytes stay
    counted once) and the rest point at it. Returns the new owner, if any."""
    if row.artifact_of is not None or not row.compressed_path:
        return None
    sharers = list(s.scalars(select(FileVersion).where(FileVersion.artifact_of == row.id,
                                                        FileVersion.state.in_(NEEDS_ARTIFACT)).order_by(FileVersion.id)))
    if not sharers:
        return None
    new, rest = sharers[0], sharers[1:]
    new.artifact_of, new.compressed_size = None, row.compressed_size
    for r in rest:
        r.artifact_of = new.id
    for r in s.scalars(select(FileVersion).where(FileVersion.artifact_of == row.id)):  # forgotten ones, for the record
        r.artifact_of = new.id
    return new


# -- near duplicates ------------------------------------------------------------------------------
def near(s: Session, phash: str, dhash: str | None = None, *, phash_max: int = likeness.PHASH_MAX,
         dhash_max: int = likeness.DHASH_MAX, limit: int = 50, exclude_id: int | None = None) -> list[tuple[FileVersion, int, int | None]]:
    """Rows (not forgotten) whose pHash is within ``phash_max`` bits of ``phash`` (and dHash within
    ``dhash_max`` of ``dhash`` when given), nearest first, as (row, pHash distance, dHash distance).
    Candidates come only through the indexed bands (multi-index hashing: ``likeness.probes``)."""
    F = FileVersion
    per_band = likeness.probes(phash, phash_max)
    cols = (F.phash_b0, F.phash_b1, F.phash_b2, F.phash_b3)
    # one lookup per band, each answered from its index alone (it holds the four bands, i.e. the
    # pHash); a UNION, because an OR of the four makes SQLite scan the table
    q = union_all(*(select(F.id, *cols).where(c.in_(vals)) for c, vals in zip(cols, per_band)))
    if s.get_bind().dialect.name == "postgresql":
        # PostgreSQL's planner would fetch the ~45,000 candidates of a million-row catalog from the
        # table (a bitmap, or a scan): the band indexes hold all the lookup needs (index-only scans)
        s.execute(text("SET LOCAL enable_bitmapscan = off"))
        s.execute(text("SET LOCAL enable_seqscan = off"))
        # and the server keeps only the candidates within the distance (popcount of each band's XOR)
        u = q.subquery()
        dist = sum(func.bit_count(cast(u.c[f"phash_b{i}"].op("#")(b), BIT(16))) for i, b in enumerate(likeness.bands(phash)))
        q = select(u).where(dist <= phash_max)
    want = likeness.as_int(phash)
    close = {}
    for fid, b0, b1, b2, b3 in s.execute(q):
        dp = (((b0 << 48) | (b1 << 32) | (b2 << 16) | b3) ^ want).bit_count()
        if dp <= phash_max and fid != exclude_id:
            close[fid] = dp
    hits = []
    for r in s.scalars(select(F).where(F.id.in_(list(close)), F.state != FORGOTTEN)) if close else ():
        dd = likeness.distance(dhash, r.dhash) if dhash and r.dhash else None
        if dhash and (dd is None or dd > dhash_max):
            continue
        hits.append((close[r.id], dd if dd is not None else 0, r.id, r))
    hits.sort(key=lambda h: h[:3])
    return [(r, dp, dd if dhash else None) for dp, dd, _, r in hits[:limit]]


def newest_committed_hashes(s: Session) -> list[tuple[int, str, str, str]]:
    """(id, path, pHash, dHash) of the newest committed version of every path that has hashes."""
    F = FileVersion
    newest = select(func.max(F.id)).where(F.state == COMMITTED).group_by(F.path).scalar_subquery()
    return [tuple(r) for r in s.execute(select(F.id, F.path, F.phash, F.dhash).where(
        F.id.in_(newest), F.phash.is_not(None), F.dhash.is_not(None)).order_by(F.id))]


def near_groups(entries: Iterable[tuple[int, str, str, str]], *, phash_max: int = likeness.PHASH_MAX,
                dhash_max: int = likeness.DHASH_MAX, progress=None) -> list[list[tuple[int, str, int, int]]]:
    """Groups (connected by near pairs, union-find) of ``(id, path, pHash, dHash)`` entries; each
    group as (id, path, pHash distance, dHash distance) to its first member, oldest first. Every
    pair is compared, vectorised (``likeness.near_pairs``). ``progress(iterable, total=, desc=)``:
    the caller's view of the work."""
    entries = list(entries)
    parent = list(range(len(entries)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in likeness.near_pairs([e[2] for e in entries], [e[3] for e in entries], phash_max=phash_max,
                                    dhash_max=dhash_max, progress=progress):
        parent[find(j)] = find(i)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(entries)):
        groups[find(i)].append(i)
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        first = entries[members[0]]
        out.append([(entries[m][0], entries[m][1], likeness.distance(first[2], entries[m][2]),
                     likeness.distance(first[3], entries[m][3])) for m in members])
    out.sort(key=lambda g: g[0][0])
    return out


def exact_groups(s: Session) -> list[list[tuple[int, str, Optional[int]]]]:
    """Committed rows (newest per path) with the same original SHA-256, as (id, path, artifact_of)."""
    F = FileVersion
    newest = select(func.max(F.id)).where(F.state == COMMITTED).group_by(F.path).scalar_subquery()
    dup = select(F.sha256).where(F.id.in_(newest)).group_by(F.sha256).having(func.count() > 1).scalar_subquery()
    rows = s.execute(select(F.sha256, F.id, F.path, F.artifact_of).where(F.id.in_(newest), F.sha256.in_(dup))
                     .order_by(F.sha256, F.id)).all()
    groups: dict[str, list] = defaultdict(list)
    for sha, fid, path, owner in rows:
        groups[sha].append((fid, path, owner))
    return list(groups.values())
