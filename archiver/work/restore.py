"""Getting files back: the vaulted original when it is still there, else what the file's codec
(``codecs.codec_for(row)``) gives back: the exact original from an exact codec, the verified
reconstruction with the original's metadata from a lossy one.

Never overwrites an existing file without ``force``; with ``to`` every destination must stay
inside that directory (a catalog path with ``..`` or an absolute escape is refused).
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import io
import os
import stat as statmod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from PIL import Image

from ..codecs import Exactness
from ..errors import ArchiverError, NoSpaceError, NotInCatalogError, SafetyError, UsageError
from ..preview import is_preview
from ..reconstruction import DEFAULT_LOSSY_SUFFIX, PNG_CHUNKS_PARAM, is_marked, lossy_note, marked_bytes
from ..storage import atomic
from ..storage.vault import Vault, VaultError
from ..catalog import queries as q
from ..catalog.db import Catalog, DBError
from ..catalog.models import COMMITTED, FORGOTTEN, ORIG_KEPT, FileVersion
from . import files
from .invariant import replacement_holds
from .lost import artifact_problem, vault_holding, vault_until, vaults_for, when


@dataclass
class RestoreResult:
    id: int
    path: str
    dest: str
    source: str  # vault | original | lossless | reconstruction | none
    exact: str  # bytes | pixels | approx | -
    status: str  # restored | present | refused | error
    message: str = ""
    #: with status "error": the failure's exit code (10: the file's adapter is not available); with
    #: "restored": 13 when the catalog's disk was full and the restore could not be recorded
    exit_code: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def parse_time(text: str | None) -> Optional[dt.datetime]:
    """ISO 8601 date or time; without a zone it is UTC. Returns naive UTC."""
    if not text:
        return None
    try:
        t = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--as-of: not an ISO date/time: {text!r} (e.g. 2026-01-31 or 2026-01-31T12:00)") from None
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc).replace(tzinfo=None)
    elif len(text.strip()) == 10:  # a bare date means the end of that day
        t = t + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    return t


def destination(row: FileVersion, to: str | Path | None) -> Path:
    """Where ``row`` is restored: its own path, or the same path relative to its root under ``to``.
    Either way the destination must not be reached through a symbolic link that leads out of the
    tree: in place, its directory must still resolve to where the file was archived; under
    ``to``, it must stay inside ``to``. (The write itself then walks the directories without
    following any link, see ``_restore_one``.)"""
    if to is None:
        dest = Path(row.path)
        _same_place(row, dest)
        return dest
    base = Path(os.path.realpath(to))
    rel = None
    if row.root:
        try:
            rel = os.path.relpath(row.path, row.root)
        except ValueError:
            rel = None
    if rel is None or rel.startswith(".." + os.sep) or rel == "..":
        rel = os.path.basename(row.path)
    dest = Path(os.path.normpath(base / rel))
    real = Path(os.path.realpath(dest.parent)) / dest.name
    if os.path.commonpath([str(base), str(real)]) != str(base) or real == base:
        raise SafetyError(f"{row.path}: restoring to {dest} would leave {base}; refused")
    return dest


def _same_place(row: FileVersion, dest: Path) -> None:
    """Refuse an in-place restore whose directory no longer leads where the file was archived:
    its resolved path must equal the one recorded at discovery (``real_parent``); for rows
    recorded before that, no directory from the archived root down may be a symbolic link."""
    real = os.path.realpath(dest.parent)
    recorded = getattr(row, "real_parent", None)
    if recorded:
        if real != recorded:
            raise SafetyError(f"{dest}: {dest.parent} now leads to {real}, not to {recorded} where the file was "
                              "archived (a directory on the way was replaced by a symbolic link?); refused (use --to)")
        return
    root = Path(row.root) if row.root else None
    top = root.parent if root is not None and (root == dest.parent or root in dest.parents) else Path(dest.anchor)
    d = dest.parent
    while d != top and d != d.parent:
        if d.is_symlink():
            raise SafetyError(f"{dest}: {d} is now a symbolic link (to {os.path.realpath(d)}); restoring through it "
                              "could write outside the tree; refused (use --to)")
        d = d.parent


def _target_dir(dest: Path, to) -> Path:
    """The directory written into, as a path without links: in place, where ``dest``'s directory
    resolves (checked by ``_same_place``); under ``to``, the path below the resolved ``to``."""
    return Path(os.path.realpath(dest.parent)) if to is None else dest.parent


def _open_dir(directory: Path, create: bool) -> int | None:
    """``atomic.open_dir_nofollow``; None when it does not exist yet (and not ``create``);
    ``SafetyError`` when a component is a symbolic link."""
    try:
        return atomic.open_dir_nofollow(directory, create=create)
    except FileNotFoundError:
        if create:
            raise
        return None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise SafetyError(f"{directory}: a directory on the way is a symbolic link or not a directory; "
                              "restore never writes through one; refused") from None
        raise


def _existing(dir_fd: int | None, name: str) -> os.stat_result | None:
    if dir_fd is None:
        return None
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _holds_sha(dir_fd: int, name: str, sha: str | None) -> bool:
    """Whether ``name`` in ``dir_fd`` is a regular file (not followed) with SHA-256 ``sha``."""
    if not sha:
        return False
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        if not statmod.S_ISREG(os.fstat(fd).st_mode):
            return False
        h = hashlib.sha256()
        for chunk in iter(lambda: os.read(fd, 1 << 20), b""):
            h.update(chunk)
        return h.hexdigest() == sha
    finally:
        os.close(fd)


def _approx_dest(row: FileVersion, dest: Path, data: bytes, lossy_suffix: str | None) -> Path:
    """The name of an approximate restore: NAME<lossy_suffix>.EXT when asked; a file whose format
    cannot carry the mark gets ``DEFAULT_LOSSY_SUFFIX`` in any case (its name is its only mark);
    and one written as PNG because its own format could not hold the image ends in ``.png``."""
    with Image.open(io.BytesIO(data)) as im:
        written = im.format
    ext = dest.suffix
    if written != (row.format or "PNG").upper() and not (written == "JPEG" and (row.format or "").upper() == "MPO"):
        ext = next((e for e, f in Image.registered_extensions().items() if f == written), ext)
    suffix = lossy_suffix or ("" if is_marked(data) else DEFAULT_LOSSY_SUFFIX)
    if not suffix and ext == dest.suffix:
        return dest
    return dest.with_name(dest.stem + suffix + ext)


def _reconstruction_bytes(row: FileVersion, img, codec_fmt: str | None) -> bytes:
    """The decoded image in the original's format, with its EXIF/ICC/XMP (and a PNG's own text,
    gamma and colour chunks, which the catalog keeps), marked as a reconstruction."""
    return marked_bytes(img, (row.format or "PNG").upper(), lossy_note(row),
                        chunks=(row.codec_params or {}).get(PNG_CHUNKS_PARAM), name=row.path)


def read_compressed(row: FileVersion) -> bytes:
    """The row's compressed file, checked against the catalog's SHA-256."""
    cp = Path(row.compressed_path)
    try:
        blob = cp.read_bytes()
    except OSError as e:
        raise ArchiverError(f"{row.path}: compressed file {cp} unreadable ({e.strerror})") from None
    if row.compressed_sha256 and hashlib.sha256(blob).hexdigest() != row.compressed_sha256:
        raise ArchiverError(f"{row.path}: compressed file {cp} is damaged (SHA-256 mismatch)")
    return blob


def _from_vault(row: FileVersion, vault: Vault | None) -> bytes | None:
    """The vaulted original through ``Vault.read_verified`` (no link followed, SHA-256 checked):
    from the vault the row names, else the configured one; None when neither holds it intact."""
    for v in vaults_for(row, vault):
        try:
            return v.read_verified(row.sha256)
        except VaultError:
            continue
    return None


def produce(row: FileVersion, vault: Vault | None, codecs=None, *, from_artifact: bool = False) -> tuple[bytes, str, str]:
    """(bytes, source, exactness) for ``row``, best source first: the vaulted original, the original
    still on disk, else what the row's codec gives back (checked against what the catalog recorded
    when it was verified); with ``from_artifact`` only the latter. Raises ArchiverError when none."""
    if row.sha256 and not from_artifact:
        data = _from_vault(row, vault)
        if data is not None:
            return data, "vault", "bytes"
        try:
            data, _ = files.read_original(Path(row.path))  # once, without following a link
            if hashlib.sha256(data).hexdigest() == row.sha256:
                return data, "original", "bytes"
        except OSError:
            pass
    if not row.compressed_path:
        raise ArchiverError(f"{row.path}: no vaulted original, no original on disk and no compressed file")
    held = replacement_holds(row, codecs)
    if held.error is not None:  # the codec's own reason and exit code (10: the file's adapter is missing)
        raise held.error
    if not held.ok:
        raise ArchiverError(f"{row.path}: {held.why}")
    got = held.restored
    if got.exact == Exactness.APPROX.value:  # the verified reconstruction, written in the original's format
        return _reconstruction_bytes(row, got.image, None), "reconstruction", got.exact
    return got.data, "lossless", got.exact


def restore(catalog: Catalog, targets: list[str], *, vault: Vault | None = None, codecs=None,
            to: str | Path | None = None, as_of: dt.datetime | None = None, force: bool = False,
            lossy_suffix: str | None = None, progress=None, from_artifact: bool = False) -> list[RestoreResult]:
    """Restore ``targets`` (ids, paths, directories, globs). An approximate restore (a lossy codec's
    reconstruction) is marked in its XMP and EXIF, gets the original's mtime like any restore, and
    with ``lossy_suffix`` (e.g. ".reconstructed") is written as NAME<suffix>.EXT beside where the
    original would go, so that it cannot be taken for the original. ``from_artifact``: decode the
    archived file even where the vault or the disk still holds the original (to see what it gives
    back). ``progress(rows)`` wraps the iteration (the caller draws it)."""
    if to is not None:
        if Path(to).exists() and not Path(to).is_dir():
            raise UsageError(f"--to {to}: not a directory")
        Path(to).mkdir(parents=True, exist_ok=True)
    rows: list[FileVersion] = []
    with catalog.session() as s:
        for t in targets:
            key = t if t.isdigit() or t.startswith("/") else os.path.abspath(t)
            found = q.find_for_restore(s, key, as_of=as_of)
            found += [r for r in q.find_forgotten_vaulted(s, key, as_of=as_of)  # forgotten, but still in the vault
                      if vault_holding(r, vault) is not None]
            if not found:
                raise NotInCatalogError(f"{t}: nothing committed in the catalog matches" + (f" as of {as_of}" if as_of else ""))
            rows.extend(found)
    results = []
    for row in (progress(rows) if progress else rows):
        results.append(_restore_one(catalog, row, vault, codecs, to, force, lossy_suffix, from_artifact))
    return results


def _restore_one(catalog, row, vault, codecs, to, force, lossy_suffix=None, from_artifact=False) -> RestoreResult:
    try:
        dest = destination(row, to)
    except SafetyError as e:
        return RestoreResult(row.id, row.path, "", "none", "-", "refused", str(e))
    res = RestoreResult(row.id, row.path, str(dest), "none", "-", "error")
    directory = _target_dir(dest, to)
    try:
        dfd = _open_dir(directory, create=False)
    except SafetyError as e:
        res.status, res.message = "refused", str(e)
        return res
    except OSError as e:
        res.message = f"cannot open {directory}: {e.strerror or e}"
        return res
    try:
        return _restore_into(catalog, row, vault, codecs, force, lossy_suffix, res, dest, directory, dfd, from_artifact)
    finally:
        if dfd is not None:
            os.close(dfd)


def _restore_into(catalog, row, vault, codecs, force, lossy_suffix, res, dest, directory, dfd,
                  from_artifact=False) -> RestoreResult:
    """The rest of ``_restore_one``, with the destination's directory open (``dfd``, None while it
    does not exist): every look at and write of the destination goes through that descriptor."""
    if dfd is not None and not from_artifact and _holds_sha(dfd, dest.name, row.sha256):
        res.source, res.exact, res.status, res.message = "original", "bytes", "present", "identical file already there"
        return res
    if _existing(dfd, dest.name) is not None and not force and not lossy_suffix:
        res.status, res.message = "refused", f"{dest} exists; use --force to overwrite"
        return res  # refused before any decoding (with a suffix the name is known only after)
    try:
        data, source, exact = produce(row, vault, codecs, from_artifact=from_artifact)
    except ArchiverError as e:
        res.message, res.exit_code = str(e), e.exit_code
        return res
    if exact == "approx":
        dest = _approx_dest(row, dest, data, lossy_suffix)
        res.dest = str(dest)
    if _existing(dfd, dest.name) is not None and not force:
        res.status, res.message = "refused", f"{dest} exists; use --force to overwrite"
        return res
    mode = (row.mode & 0o7777) if row.mode is not None else 0o644
    try:
        if dfd is None:
            dfd_new = _open_dir(directory, create=True)
        else:
            dfd_new = os.dup(dfd)
        try:
            st = atomic.write_in_dir(dfd_new, dest.name, data, overwrite=force, mode=mode,
                                     owner=(row.uid, row.gid) if row.uid is not None else None,
                                     mtime_ns=row.mtime_ns or None)  # also a reconstruction's (its XMP/EXIF say what it is)
        finally:
            os.close(dfd_new)
    except SafetyError as e:
        res.status, res.message = "refused", str(e)
        return res
    except FileExistsError:
        res.status, res.message = "refused", f"{dest} exists; use --force to overwrite"
        return res
    except OSError as e:  # a full, read-only or immutable destination: this file fails, the batch goes on
        res.message = f"cannot write {dest}: {e.strerror or e}"
        return res
    if exact == "approx":
        res.message = ("approximate reconstruction (marked in its XMP and EXIF)" if is_marked(data)
                       else f"approximate reconstruction (its format cannot carry a mark: named {dest.name})")
    if source == "vault":
        res.message = _vault_note(row, vault)
    res.source, res.exact, res.status = source, exact, "restored"
    try:
        _record_restore(catalog, row, dest, st, data, source, exact)
    except DBError as e:  # a read-only catalog does not stop a restore
        res.message = (res.message + "; " if res.message else "") + \
            f"restored, but the catalog could not record it ({getattr(e, 'orig', e)})"
    except NoSpaceError as e:  # a full catalog neither: the file is back; the command exits 13 at the end
        res.message = (res.message + "; " if res.message else "") + f"restored, but the catalog could not record it: {e}"
        res.exit_code = e.exit_code
    return res


def _vault_note(row: FileVersion, vault: Vault | None) -> str:
    """Why a restore from the vault is worth a word: the version was forgotten, or its compressed
    file is lost (the vault copy is then the only one left); "" otherwise."""
    if row.state == FORGOTTEN:
        return "this version was forgotten, but the vault still held its original: restored from the vault"
    lost = artifact_problem(row)
    if not lost:
        return ""
    try:
        v = Vault.holding(row.vault_path) if row.vault_path else vault
    except VaultError:
        v = vault
    until = vault_until(row, v) if v is not None else None
    return (f"restored from the vault: {lost}; the vault copy (until {when(until)}) was its only copy. "
            f"Next: `archiver forget {row.id} --reason ...`, and the next migrate archives it again")


def _record_restore(catalog, row, dest: Path, st: os.stat_result, data: bytes, source: str, exact: str) -> None:
    with catalog.session() as s:
        r = s.get(FileVersion, row.id)
        q.add_event(s, "restored", fv=r, dest=str(dest), source=source, exact=exact)
        if r.state == FORGOTTEN:  # it stays forgotten: the file back on disk is archived as a new version
            return
        preview = r.preview_path if str(dest) == r.path else None
        if str(dest) == r.path:
            # the original (or its exact pixels, or a marked reconstruction) is back where it was: it
            # stays, and archive and the daemon recognise the restored file as this version
            params = dict(r.params or {})
            params["restored"] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                  "sha256": hashlib.sha256(data).hexdigest(), "exact": exact}
            q.transition(s, r, COMMITTED, kind="original_restored", original_status=ORIG_KEPT, params=params)
    if preview:  # the file itself is back beside it: its stand-in thumbnail goes, if it is still the one written
        _remove_preview(catalog, row.id, Path(preview))


def _remove_preview(catalog, file_id: int, preview: Path) -> None:
    """Remove a row's preview only while it is a file archiver wrote (the recorded SHA-256);
    a preview of an older archiver (no digest) or a file changed since is left, with an event."""
    with catalog.session() as s:
        r = s.get(FileVersion, file_id)
        sha = r.preview_sha256
    if not is_preview(preview):
        why = "not named as a preview"
    elif not sha:
        why = "no digest recorded for it (written by an older archiver), so it is not known to be ours"
    else:
        why = files.remove_own(preview, file_id, sha)
    with catalog.session() as s:
        r = s.get(FileVersion, file_id)
        if why is None:
            q.transition(s, r, COMMITTED, kind="preview_removed", preview_path=None, preview_sha256=None)
        else:
            q.add_event(s, "preview_left", fv=r, preview=str(preview), why=why)


def is_restored_copy(row: FileVersion, st: os.stat_result) -> bool:
    """Whether the file at ``row.path`` with stat ``st`` is the one restore put there."""
    rec = (row.params or {}).get("restored") or {}
    return rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns
