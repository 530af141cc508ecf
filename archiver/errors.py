"""User-facing errors.

Every error a user can cause (bad input, wrong weights, corrupt container, bad policy) is an
``ArchiverError`` subclass with its own exit code, so the CLI can print one clear line and exit
without a traceback. Anything else reaching the CLI is a bug and keeps its traceback.

The codes are part of the interface (scripts and systemd units test them); the table is in
README.md and docs/operations.md: 0 ok, 1 other failure (or some files failed), 2 usage/config,
3 bad input image, 4 damaged .dlc, 5 weights mismatch, 6 bad policy, 7 catalog failure,
8 verification found problems, 9 refused as unsafe, 10 adapter missing or different,
11 not in the catalog, 12 locked by another process, 13 not enough free disk space (also for
the catalog: ``CatalogFullError``), 14 not a file ``decode`` reads (no codec's artifact),
130 interrupted.
"""


class ArchiverError(Exception):
    exit_code = 1


class UsageError(ArchiverError):
    """Bad arguments or configuration."""

    exit_code = 2


class InputError(ArchiverError):
    """The input file is not a usable image (missing, truncated, corrupt, bomb, not an image)."""

    exit_code = 3


class ContainerError(ArchiverError):
    """An archived file (.dlc, .avif, .jxl) is truncated, altered, of an unknown version or otherwise unreadable."""

    exit_code = 4


class WeightsMismatchError(ArchiverError):
    """A bitstream names backbone weights other than the ones available."""

    exit_code = 5


class PolicyError(ArchiverError):
    """A policy file is invalid."""

    exit_code = 6


class CatalogError(ArchiverError):
    """Catalog problems (locked, schema too new, missing record)."""

    exit_code = 7


class NoCatalogError(CatalogError):
    """There is no catalog where the config says, and none was ever recorded there (a fresh or
    mistyped ``ARCHIVER_HOME``/``catalog_url``); only ``archive``, ``migrate`` and the daemon create one."""


class NotInCatalogError(CatalogError):
    """Nothing in the catalog matches the path or pattern asked for (restore, show, forget)."""

    exit_code = 11


class LockedError(CatalogError):
    """Another process holds the lock (a daemon already serves this catalog)."""

    exit_code = 12


class NoSpaceError(ArchiverError):
    """Not enough free disk space to start (or go on) safely."""

    exit_code = 13


class UnknownArtifactError(ArchiverError):
    """``decode`` was given a file that is no codec's artifact (another image, another file type):
    not damage, just not something archiver wrote."""

    exit_code = 14


class CatalogFullError(NoSpaceError):
    """A catalog write failed because the catalog's disk (or database server) is full. Nothing
    was committed by that transaction, so nothing is lost: the run stops (exit 13) rather than
    fail every remaining file, and the same command finishes the work once there is space."""


class VerifyError(ArchiverError):
    """A verification found mismatches."""

    exit_code = 8


class SafetyError(ArchiverError):
    """An operation was refused because it could lose data (overwrite, path escape, changed source)."""

    exit_code = 9


class AdapterError(ArchiverError):
    """An adapter (a backbone's trained entropy model and quantization steps) is missing, damaged,
    made for other backbone weights, or not the one a bitstream was coded with."""

    exit_code = 10
