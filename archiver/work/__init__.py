"""The unit of work: archive one file safely, and get it back.

``archive_file(path, ctx)`` takes the path's lock, runs recovery for it (``recovery``), then
runs the steps on one ``Job`` record (``job``), each step one module:

    discover -> classify -> encode -> write -> check -> vault -> commit -> dispose -> preview
                              ^                  |
                              '-- next codec ----'   (the action, then its fallback list; none left: keep)

Every change to the world goes through a writer (``writers``): the catalog transition (with its
event) is recorded *before* moving on, so a crash anywhere is recognisable on the next run. The
dry run runs the very same steps with ``DryWriters``, which change nothing. Codecs come from the
registry (``archiver.codecs``, through ``codec.Codecs``): one is asked for an artifact in exactly
one place (``encode``) and to verify the artifact read back from disk in one other (``check``).

The invariant, enforced by the order of the steps and again by ``recovery``: an original is
removed only after the compressed file was written atomically, read back from disk and verified
by its codec, the source re-checked unchanged, the vault copy (if any) verified, and the catalog
row committed. ``restore`` and ``verify`` read what the catalog promises and check it.

The daemon, ``migrate`` and ``archiver archive`` call ``archive_file``; ``recover_pending`` runs
at their start.
"""

from .archive import COMPRESSED_EXTS, archive_file, is_own_output, run_steps
from ..codecs import image_digest
from ..codecs.bound import Codecs
from .context import ArchiveContext
from .faults import FAULT_ENV, FAULT_STEPS
from .job import ArchiveOutcome, Job
from .locks import path_lock
from .recovery import recover, recover_pending
from .restore import RestoreResult, parse_time, restore
from .verify import VerifyReport, expire_vault, stats, verify

__all__ = [
    "COMPRESSED_EXTS", "FAULT_ENV", "FAULT_STEPS", "ArchiveContext", "ArchiveOutcome", "Codecs",
    "Job", "RestoreResult", "VerifyReport", "archive_file", "expire_vault", "image_digest", "is_own_output",
    "parse_time", "path_lock", "recover", "recover_pending", "restore", "run_steps", "stats", "verify",
]
