"""``archive_file``: run the steps on one job, under the path's lock, after recovery."""

from __future__ import annotations

import os
from pathlib import Path

from ..catalog import queries as q
from .. import codecs
from ..catalog.models import COMMITTED, FAILED, ORIG_KEPT, SKIPPED
from ..errors import ArchiverError, NoSpaceError
from ..preview import is_preview
from ..storage import atomic
from .check import Check
from .classify import Classify
from .commit import Commit
from .discover import Discover
from .dispose import Dispose
from .encode import Encode
from ..storage.atomic import is_utf8, shown_name
from .job import ArchiveOutcome, Job, Skip
from .locks import path_lock
from .preview import Preview
from .recovery import recover
from .restore import is_restored_copy
from .share import Share
from .vault import Vault
from .write import Write
from .writers import DryWriters, RealWriters

#: extensions of the files archive writes beside originals (every registered codec's)
COMPRESSED_EXTS = codecs.suffixes()


def is_own_output(ctx, path: Path) -> bool:
    """Compressed files, previews, temp files and originals taken for removal are never archived themselves."""
    if atomic.is_private_name(path) or is_preview(path):
        return True
    if path.suffix not in COMPRESSED_EXTS:
        return False
    with ctx.catalog.session() as s:
        return q.is_compressed_path(s, str(path))


def archive_file(path: str | Path, ctx) -> ArchiveOutcome:
    """Archive one file per policy; safe to call again on the same path at any time. With
    ``ctx.dry_run`` the same steps run with writers that change nothing."""
    p = Path(os.path.abspath(path))
    sp = str(p)
    if not is_utf8(sp):
        shown = shown_name(sp)
        return ArchiveOutcome(shown, SKIPPED, error=f"{shown}: the name is not valid UTF-8 and cannot be recorded in the "
                              "catalog; left untouched (rename it to archive it)")
    if is_own_output(ctx, p):
        return ArchiveOutcome(sp, SKIPPED, reasons=["an archiver output file, not an original"])
    if ctx.dry_run:
        return run_steps(Job(p, ctx.root), ctx, DryWriters(ctx))
    with path_lock(ctx.lock_dir, sp):
        recovered = recover(p, ctx)
        with ctx.catalog.session() as s:
            row = q.latest_version(s, sp)
        if row is not None and row.state == COMMITTED:
            if not (p.exists() or p.is_symlink()):
                return ArchiveOutcome.of_row(row, "unchanged", recovered)
            st = os.lstat(p)
            same = (st.st_size, st.st_mtime_ns) == (row.size, row.mtime_ns) or is_restored_copy(row, st)
            if same and row.original_status == ORIG_KEPT:
                return ArchiveOutcome.of_row(row, "unchanged", recovered)
            # otherwise: a new version of the file gets a new row
        return run_steps(Job(p, ctx.root, recovered), ctx, RealWriters(ctx))


def run_steps(job: Job, ctx, w) -> ArchiveOutcome:
    """discover -> classify -> (encode -> write -> check, codec after codec until one is verified
    or none is left: keep) -> vault -> commit -> dispose -> preview (if configured). A failure
    ends the file as failed, except a ``NoSpaceError`` (the catalog is full), which is raised."""
    try:
        early = Discover(ctx).run(job, w)
        if early is not None:
            return _dry(job, early) if w.dry else early
        Classify(ctx).run(job, w)
        shared = job.action != "keep" and Share(ctx).run(job, w)
        while job.action != "keep" and not shared:
            if Encode(ctx).run(job, w):
                Write(ctx).run(job, w)
                if Check(ctx).run(job, w):
                    break
        if job.action != "keep":
            Vault(ctx).run(job, w)
        Commit(ctx).run(job, w)
        Dispose(ctx).run(job, w)
        Preview(ctx).run(job, w)
    except Skip as e:
        if job.row is None:
            out = ArchiveOutcome(job.sp, e.state, error=str(e), reasons=[str(e)], recovered=job.recovered)
            return _dry(job, out) if w.dry else out
        w.record(job, e.state, kind="skip" if e.state == SKIPPED else "failed", error=str(e))
    except NoSpaceError:
        # the catalog's disk is full (``CatalogFullError``): its transaction was not committed, so
        # nothing happened that is not on record; writing "failed" would fail too. The row stays
        # as it was, recovery rolls it back on the next run, and the caller stops the whole run.
        raise
    except (ArchiverError, OSError) as e:
        if job.row is None:
            raise
        msg = f"{type(e).__name__}: {e}"
        if job.row.state == COMMITTED:  # the replacement is safe; removing the original failed: retried next run
            w.record(job, COMMITTED, kind="dispose_failed", error=msg)
        else:
            if job.compressed_path is not None:
                try:
                    w.discard_artifact(job, job.compressed_path, job.row.compressed_sha256)
                except OSError:
                    pass
            w.record(job, FAILED, kind="failed", error=msg)
    return _dry(job, None) if w.dry else _outcome(job)


def _attempts(job: Job) -> list[dict]:
    return job.choice.candidates_tried(job.codec.name if job.codec is not None else None) if job.choice is not None else []


def _outcome(job: Job) -> ArchiveOutcome:
    out = ArchiveOutcome.of_row(job.row, recovered=job.recovered)
    out.fallback = job.fallback
    out.attempts = _attempts(job)
    out.shares = job.shared_path
    return out


def _dry(job: Job, early: ArchiveOutcome | None) -> ArchiveOutcome:
    """What the dry run reports: the action the steps arrived at and the real sizes."""
    if early is not None:
        return ArchiveOutcome(job.sp, "dry-run", action="skip", error=early.error, reasons=early.reasons)
    row = job.row
    if row.state != COMMITTED:
        return ArchiveOutcome(job.sp, "dry-run", action="skip", rule=row.rule, error=row.error,
                              reasons=list(job.reasons), size_before=len(job.data), size_after=len(job.data))
    size = len(job.data)
    after = size if job.action == "keep" or job.encoded is None else len(job.encoded.data)
    if job.shared is not None:
        after = 0  # an exact copy of a committed original: its stored file is shared
    return ArchiveOutcome(job.sp, "dry-run", action=job.action, rule=row.rule, reasons=list(job.reasons),
                          size_before=size, size_after=after, bpp=row.bpp, psnr=job.quality.get("psnr"),
                          ms_ssim=job.quality.get("ms_ssim"), score=job.quality.get("score"),
                          target=job.choice.target.score if job.choice is not None and job.choice.target else None,
                          disposition=job.disposition, fallback=job.fallback,
                          attempts=_attempts(job), retention_days=job.params.get("retention_days"),
                          shares=job.shared_path, content_key=job.content_key)
