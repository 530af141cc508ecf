"""The unit of work: archive one file, safely, idempotently, resumably.

``archive_file(path, ctx)`` runs classify -> encode -> write -> verify -> commit -> dispose,
recording every step as a catalog transition (with an event) *before* moving on, so a crash
at any point is recognisable on the next run:

- a row left in an in-progress state (discovered/classified/encoded/verified) is rolled back to
  ``failed``: the half-made compressed file (its name was recorded before writing) is removed and
  the file is processed again — the original was never touched before ``committed``;
- a ``committed`` row whose original is still present (crash between commit and removal) is
  finished: the original is removed only if it is still byte-identical to what was archived.

The original is removed only after the compressed file was written atomically, re-read, decoded,
passed the quality guard, the source was re-checked unchanged, the vault copy (if any) was
verified, and the catalog row was committed. The daemon and ``migrate`` call exactly this.

Fault injection for tests: ``ARCHIVER_FAULT=<step>`` kills the process with SIGKILL at that step
(see ``FAULT_STEPS``).
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import os
import signal
import stat as statmod
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from PIL import Image

from .catalog import queries as q
from .catalog.db import Catalog
from .catalog.models import (CLASSIFIED, COMMITTED, DISCOVERED, ENCODED, FAILED, IN_PROGRESS, ORIG_KEPT,
                             ORIG_PRESENT, ORIG_REMOVED, SKIPPED, VERIFIED, FileVersion, utcnow)
from .errors import ArchiverError, InputError
from .imageio import DEFAULT_MAX_PIXELS, LoadedImage, load_image
from .storage import atomic, lossless
from .storage.vault import Vault, sha256_file

FAULT_ENV = "ARCHIVER_FAULT"
#: step boundaries where ``ARCHIVER_FAULT`` can kill the process (in the order they happen)
FAULT_STEPS = ("discovered", "classified", "write_intent", "during_write", "written", "encoded",
               "verified", "vaulted", "committed", "removed")
#: extensions of the files archive writes beside originals
COMPRESSED_EXTS = (".dlc", lossless.JXL_EXT, lossless.AXL_EXT)


def _fault(step: str) -> None:
    if os.environ.get(FAULT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


# -- codecs ------------------------------------------------------------------------------------
@dataclass
class Encoded:
    data: bytes
    ext: str
    codec: str
    bpp: float | None = None
    backbone: str | None = None
    backbone_digest: str | None = None


class Codec(Protocol):
    """What archive needs from the diffusion codec (the real one, or a fake in tests)."""

    def encode(self, img: LoadedImage, params: dict, regions: list) -> Encoded: ...

    def decode(self, data: bytes) -> Image.Image: ...


class DiffusionCodec:
    """The project's latent-diffusion codec (``archiver.codec.pipeline``), backbone loaded lazily."""

    def __init__(self, backbone=None, *, name: str = "tiny", model_path=None, device: str = "auto",
                 steps: int | None = None):
        self._backbone, self.name, self.model_path, self.device, self.steps = backbone, name, model_path, device, steps

    @property
    def backbone(self):
        if self._backbone is None:
            from .codec.backbones import get_backbone

            self._backbone = get_backbone(self.name, model_path=self.model_path, device=self.device)
        return self._backbone

    def encode(self, img: LoadedImage, params: dict, regions: list) -> Encoded:
        from .codec import pipeline

        kw: dict[str, Any] = {"bpp": params.get("bpp")}
        if self.steps:
            kw["steps"] = self.steps
        if regions and "roi" in _params_of(pipeline.encode_image):
            kw["roi"] = [tuple(b) for b in regions]  # finer quantisation where faces/text are
        r = pipeline.encode_image(img, self.backbone, **kw)
        return Encoded(r.data, ".dlc", "dlc", float(r.bpp), self.backbone.id, self.backbone.weights_digest)

    def decode(self, data: bytes) -> Image.Image:
        from .codec import pipeline

        d = pipeline.decode_bytes(data, self.backbone)  # steps come from the header
        img = d.image
        meta = getattr(d, "metadata", None)
        if meta is not None:
            for k, v in meta.pil_save_kwargs().items():
                img.info[k] = v
        return img


def _params_of(fn) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


# -- context and outcome -----------------------------------------------------------------------
@dataclass
class ArchiveContext:
    catalog: Catalog
    policy: Any  # archiver.policy.engine.Policy (anything with .decide)
    vault: Optional[Vault] = None
    codec: Optional[Codec] = None
    dry_run: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    root: Optional[str] = None
    now: Callable[[], dt.datetime] = utcnow
    #: per-path locks (flock, striped) so two processes on this host never work on one file at once
    lock_dir: Optional[Path] = None

    @classmethod
    def from_config(cls, config, *, policy=None, catalog: Catalog | None = None, dry_run: bool = False) -> "ArchiveContext":
        from .catalog.db import open_catalog
        from .policy.engine import load_policy

        return cls(
            catalog=catalog or open_catalog(config),
            policy=policy if policy is not None and not isinstance(policy, (str, Path)) else load_policy(policy or config.policy),
            vault=Vault(config.resolved_vault_dir()),
            codec=DiffusionCodec(name=config.backbone, model_path=config.diffusers_model, device=config.device,
                                 steps=config.decode_steps),
            dry_run=dry_run,
            max_pixels=config.max_pixels,
            lock_dir=config.state_dir / "locks",
        )


@dataclass
class ArchiveOutcome:
    path: str
    state: str  # committed | skipped | failed | dry-run | unchanged
    action: str | None = None
    rule: str | None = None
    reasons: list[str] = field(default_factory=list)
    file_id: int | None = None
    compressed_path: str | None = None
    size_before: int | None = None
    size_after: int | None = None
    bpp: float | None = None
    psnr: float | None = None
    ms_ssim: float | None = None
    disposition: str | None = None
    original_status: str | None = None
    fallback: str | None = None
    error: str | None = None
    recovered: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# -- helpers -----------------------------------------------------------------------------------
def image_digest(img: Image.Image) -> str:
    """SHA-256 of a decoded image (mode, size, pixels): the reconstruction's identity."""
    h = hashlib.sha256(f"{img.mode}:{img.width}x{img.height}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def sidecar_path(path: Path, ext: str, file_id: int | None = None) -> Path:
    """Where the compressed file goes: beside the original, ``photo.jpg`` -> ``photo.jpg.jxl``;
    if that name is taken (e.g. by an older version's file), ``photo.jpg.<id>.jxl``."""
    p = path.with_name(path.name + ext)
    if (p.exists() or p.is_symlink()) and file_id is not None:
        p = path.with_name(f"{path.name}.{file_id}{ext}")
    return p


def _perceptual_hashes(img: LoadedImage) -> tuple[str | None, str | None]:
    try:
        import imagehash

        return str(imagehash.phash(img.rgb)), str(imagehash.dhash(img.rgb))
    except Exception:  # a hash is a convenience, never a reason to fail
        return None, None


def _quality(original: LoadedImage, recon: Image.Image, regions) -> dict:
    from .metrics import ms_ssim, psnr

    rgb = recon.convert("RGB")
    if rgb.size != original.rgb.size:
        return {"psnr": 0.0, "ms_ssim": 0.0, "region_psnr": 0.0, "size_mismatch": True}
    out = {"psnr": psnr(original.rgb, rgb), "ms_ssim": ms_ssim(original.rgb, rgb), "region_psnr": None}
    vals = []
    for box in regions or ():
        l, t, r, b = (int(v) for v in box)
        l, t = max(0, l), max(0, t)
        r, b = min(rgb.width, r), min(rgb.height, b)
        if r > l and b > t:
            vals.append(psnr(original.rgb, rgb, box=(l, t, r, b)))
    if vals:
        out["region_psnr"] = min(vals)
    return out


def _guard(quality: dict, floor: dict) -> str | None:
    """None when the reconstruction meets the floor, else why not."""
    checks = (("min_psnr", "psnr", "PSNR", "dB"), ("min_ms_ssim", "ms_ssim", "MS-SSIM", ""),
              ("min_region_psnr", "region_psnr", "protected-region PSNR", "dB"))
    for fk, qk, label, unit in checks:
        lim, val = floor.get(fk), quality.get(qk)
        if lim is not None and val is not None and val < lim:
            return f"quality guard: {label} {val:.3f}{unit} below the floor {lim}{unit}"
    return None


def _file_facts(path: Path) -> tuple[bytes, os.stat_result]:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        data = f.read()
    return data, st


def _same_file(path: Path, size: int, mtime_ns: int, sha: str) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not statmod.S_ISREG(st.st_mode) or st.st_size != size or st.st_mtime_ns != mtime_ns:
        return False
    return sha256_file(path) == sha


def _unlink_durable(path: Path) -> None:
    path.unlink()
    atomic.fsync_dir(path.parent)


# -- the unit of work --------------------------------------------------------------------------
class _Skip(Exception):
    def __init__(self, reason: str, state: str = SKIPPED):
        super().__init__(reason)
        self.state = state


def is_own_output(ctx: ArchiveContext, path: Path) -> bool:
    """Compressed files and temp files written by archive are never archived themselves."""
    if atomic.is_temp_name(path):
        return True
    if path.suffix not in COMPRESSED_EXTS:
        return False
    from sqlalchemy import select

    with ctx.catalog.session() as s:
        return s.scalars(select(FileVersion.id).where(FileVersion.compressed_path == str(path)).limit(1)).first() is not None


@contextmanager
def path_lock(ctx: ArchiveContext, path: str):
    """Exclusive per-path lock (4096 striped lock files under ``ctx.lock_dir``); across hosts the
    service's queue claims play this role."""
    if ctx.lock_dir is None:
        yield
        return
    import fcntl

    Path(ctx.lock_dir).mkdir(parents=True, exist_ok=True)
    name = hashlib.sha1(path.encode()).hexdigest()[:3]
    fd = os.open(Path(ctx.lock_dir) / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def archive_file(path: str | Path, ctx: ArchiveContext) -> ArchiveOutcome:
    """Archive one file per policy; safe to call again on the same path at any time."""
    p = Path(os.path.abspath(path))
    sp = str(p)
    if is_own_output(ctx, p):
        return ArchiveOutcome(sp, SKIPPED, reasons=["an archiver output file, not an original"])
    if ctx.dry_run:
        return _dry_run(p, ctx)
    with path_lock(ctx, sp):
        return _archive_locked(p, ctx)


def _archive_locked(p: Path, ctx: ArchiveContext) -> ArchiveOutcome:
    sp = str(p)
    recovered = _recover(p, ctx)
    with ctx.catalog.session() as s:
        row = q.latest_version(s, sp)
    if row is not None and row.state == COMMITTED:
        if not (p.exists() or p.is_symlink()):
            return _outcome(row, "unchanged", recovered)
        st = os.lstat(p)
        if st.st_size == row.size and st.st_mtime_ns == row.mtime_ns and row.original_status == ORIG_KEPT:
            return _outcome(row, "unchanged", recovered)
        # otherwise: a new version of the file gets a new row
    try:
        return _archive_new(p, ctx, recovered)
    except _Skip as e:
        return ArchiveOutcome(sp, e.state, error=str(e), reasons=[str(e)], recovered=recovered)


def _outcome(row: FileVersion, state: str | None = None, recovered: str | None = None) -> ArchiveOutcome:
    after = None
    if row.state == COMMITTED:
        after = (row.compressed_size or 0) + (row.size or 0 if row.original_status in (ORIG_KEPT, ORIG_PRESENT) else 0)
    return ArchiveOutcome(
        path=row.path, state=state or row.state, action=row.action, rule=row.rule, reasons=list(row.reasons or []),
        file_id=row.id, compressed_path=row.compressed_path, size_before=row.size, size_after=after, bpp=row.bpp,
        psnr=row.psnr, ms_ssim=row.ms_ssim, disposition=row.disposition, original_status=row.original_status,
        error=row.error, recovered=recovered)


def _recover(p: Path, ctx: ArchiveContext) -> str | None:
    """Finish or roll back whatever an interrupted run left for this path."""
    sp = str(p)
    with ctx.catalog.session() as s:
        row = q.latest_version(s, sp)
        if row is None:
            return None
        if row.state in IN_PROGRESS:
            note = f"interrupted at '{row.state}'; rolled back"
            if row.compressed_path:
                cp = Path(row.compressed_path)
                _tmp_for(cp, row.id).unlink(missing_ok=True)
                if cp.is_file() and (row.compressed_sha256 is None or sha256_file(cp) == row.compressed_sha256):
                    _unlink_durable(cp)
                    note += f", removed unfinished {cp.name}"
            q.transition(s, row, FAILED, kind="rollback", error=note, compressed_path=None,
                         compressed_sha256=None, compressed_size=None, reconstruction_sha256=None)
            return note
        if row.state == COMMITTED and row.original_status == ORIG_PRESENT and row.disposition in ("replace", "vault"):
            if not p.exists():
                q.transition(s, row, COMMITTED, kind="original_gone", original_status=ORIG_REMOVED)
                return "original already gone after commit; catalog updated"
            if not _same_file(p, row.size, row.mtime_ns, row.sha256):
                # overwritten outside archiver: this version's original is no longer on disk (its
                # replacement is), and the new content is archived as a new version
                q.transition(s, row, COMMITTED, kind="original_changed", original_status=ORIG_REMOVED,
                             error="the original was overwritten after commit; the new content is a new version")
                return "original changed after commit; not removed"
            if row.disposition == "vault" and not (ctx.vault and ctx.vault.check(row.sha256)):
                q.transition(s, row, COMMITTED, kind="vault_missing", original_status=ORIG_KEPT,
                             error="vault copy missing at recovery; original kept")
                return "vault copy missing; original kept"
            _unlink_durable(p)
            q.transition(s, row, COMMITTED, kind="original_removed", original_status=ORIG_REMOVED)
            return "finished removing the original after commit"
    return None


def recover_pending(ctx: ArchiveContext) -> list[tuple[str, str]]:
    """Finish or roll back every interrupted file in the catalog (run at daemon/migrate start,
    before new work): returns (path, what was done) pairs. Each path is recovered under its
    lock, so a run on this host that is busy with the file is waited for, not rolled back; with
    workers on other hosts, run it only while none are active."""
    from sqlalchemy import select

    with ctx.catalog.session() as s:
        paths = set(s.scalars(select(FileVersion.path).where(FileVersion.state.in_(IN_PROGRESS))))
        paths |= set(s.scalars(select(FileVersion.path).where(FileVersion.state == COMMITTED,
                                                                FileVersion.original_status == ORIG_PRESENT)))
    done = []
    for path in sorted(paths):
        with path_lock(ctx, path):  # never under the feet of a worker busy with this file
            note = _recover(Path(path), ctx)
        if note:
            done.append((path, note))
    return done


def _decide(p: Path, ctx: ArchiveContext, img: LoadedImage, tags: list[str]):
    return ctx.policy.decide(str(p), img, tags=tags)


def _archive_new(p: Path, ctx: ArchiveContext, recovered: str | None) -> ArchiveOutcome:
    sp = str(p)
    try:
        st0 = os.lstat(p)
    except FileNotFoundError:
        raise _Skip(f"{sp}: no such file") from None
    if not statmod.S_ISREG(st0.st_mode):
        raise _Skip(f"{sp}: not a regular file (symlinks and devices are left alone)")
    try:
        data, st = _file_facts(p)
    except OSError as e:
        raise _Skip(f"{sp}: cannot read ({e.strerror})") from None
    sha = hashlib.sha256(data).hexdigest()
    facts = dict(root=ctx.root or str(p.parent), size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha,
                 mode=statmod.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid)

    # reuse the latest row when it is a retry of this path; a new row for a new version
    with ctx.catalog.session() as s:
        row = q.latest_version(s, sp)
        if row is not None and row.state == COMMITTED:
            row = None
        if row is not None and row.state == SKIPPED and row.sha256 == sha:
            return _outcome(row, recovered=recovered)
        if row is not None and row.state in (SKIPPED, FAILED):
            q.transition(s, row, DISCOVERED, kind="retry", **facts)
        try:
            img = load_image(data, max_pixels=ctx.max_pixels)
        except InputError as e:
            msg = str(e).replace("<bytes>", sp)
            row = q.transition(s, row or FileVersion(path=sp), SKIPPED, kind="bad_input", error=msg, **facts)
            return _outcome(row, recovered=recovered)
        ph, dh = _perceptual_hashes(img)
        fields = dict(facts, phash=ph, dhash=dh, format=img.original_format, width=img.width, height=img.height,
                      error=None, action=None, rule=None, reasons=None, compressed_path=None, vault_path=None)
        row = q.transition(s, row or FileVersion(path=sp), DISCOVERED, kind="discovered", **fields)
        tags = q.tags_for(s, sp)
    _fault("discovered")
    fid = row.id

    def step(to_state: str, kind: str | None = None, **kw) -> FileVersion:
        nonlocal row
        with ctx.catalog.session() as s:
            r = s.get(FileVersion, fid)
            q.transition(s, r, to_state, kind=kind, **kw)
            row = r
        return r

    try:
        return _archive_steps(p, ctx, img, data, sha, st, tags, step, lambda: row, recovered)
    except _Skip as e:
        step(e.state, kind="skip" if e.state == SKIPPED else "failed", error=str(e))
        return _outcome(row, recovered=recovered)
    except (ArchiverError, OSError) as e:
        msg = f"{type(e).__name__}: {e}"
        if row.state == COMMITTED:  # the replacement is safe; removing the original failed: retried next run
            step(COMMITTED, kind="dispose_failed", error=msg)
        else:
            _cleanup_unfinished(row)
            step(FAILED, kind="failed", error=msg)
        return _outcome(row, recovered=recovered)


def _cleanup_unfinished(row: FileVersion) -> None:
    if row.state != COMMITTED and row.compressed_path:
        cp = Path(row.compressed_path)
        try:
            if cp.is_file() and (row.compressed_sha256 is None or sha256_file(cp) == row.compressed_sha256):
                _unlink_durable(cp)
        except OSError:
            pass


def _archive_steps(p, ctx, img, data, sha, st, tags, step, current, recovered) -> ArchiveOutcome:
    sp = str(p)
    # 1. classify
    try:
        d = _decide(p, ctx, img, tags)
    except InputError as e:
        raise _Skip(str(e)) from None
    params = dict(d.params or {})
    action = d.action
    reasons = list(d.reasons)
    disposition = params.get("original", "keep" if action == "keep" else "vault")
    if q.LEGAL_HOLD in tags and disposition != "keep":
        disposition = "keep"
        reasons.append("legal hold: the original is kept whatever the policy says")
    regions = [list(map(int, b)) for b in (d.protected_regions or [])]
    evidence = {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in (d.evidence or {}).items()}
    step(CLASSIFIED, policy=getattr(d, "policy", None) or getattr(ctx.policy, "name", None), rule=d.rule,
         reasons=reasons, classification={"evidence": evidence, "protected_regions": regions},
         action=action, params=params, disposition=disposition)
    _fault("classified")

    fallback = None
    if action == "diffusion" and ctx.codec is None:
        action, fallback = "lossless", "no diffusion codec available"
    # 2-4. encode, write, verify (once more as lossless if the guard refuses the diffusion result)
    while action in ("diffusion", "lossless"):
        enc, why = _encode(ctx, img, data, action, params, regions)
        if enc is None:
            reasons.append(why)
            if action == "diffusion":
                fallback, action = why, "lossless"
                reasons.append("fell back to lossless")
                step(CLASSIFIED, kind="fallback", action=action, reasons=reasons)
                continue
            action = "keep"
            step(CLASSIFIED, kind="action_changed", action="keep", reasons=reasons)
            break
        row = current()
        cp = sidecar_path(p, enc.ext, row.id)
        step(CLASSIFIED, kind="write_intent", compressed_path=str(cp), codec=enc.codec, action=action)
        _fault("write_intent")
        write_new(cp, enc.data, _tmp_for(cp, row.id), mode=statmod.S_IMODE(st.st_mode), owner=(st.st_uid, st.st_gid))
        _fault("written")
        csha = hashlib.sha256(enc.data).hexdigest()
        pixels = img.width * img.height
        step(ENCODED, compressed_sha256=csha, compressed_size=len(enc.data),
             bpp=enc.bpp if enc.bpp is not None else len(enc.data) * 8 / max(1, pixels),
             backbone=enc.backbone, backbone_digest=enc.backbone_digest)
        _fault("encoded")
        verdict, qual, why = _verify_written(ctx, cp, csha, img, data, sha, action, params, regions)
        if verdict:
            step(VERIFIED, psnr=qual.get("psnr"), ms_ssim=qual.get("ms_ssim"), region_psnr=qual.get("region_psnr"),
                 reconstruction_sha256=qual.get("reconstruction_sha256"), restore_exact=qual.get("restore_exact"))
            _fault("verified")
            break
        _unlink_durable(cp)
        reasons.append(why)
        if action == "diffusion":
            fallback, action = why, "lossless"
            reasons.append("fell back to lossless")
        else:
            action = "keep"
        step(CLASSIFIED, kind="fallback", action=action, reasons=reasons, compressed_path=None,
             compressed_sha256=None, compressed_size=None, bpp=None)

    if action == "keep":
        disposition = "keep"
        step(COMMITTED, kind="committed", disposition="keep", original_status=ORIG_KEPT, committed_at=ctx.now(),
             reasons=reasons)
        _fault("committed")
        out = _outcome(current(), recovered=recovered)
        out.fallback = fallback
        return out

    # 5. the source must not have changed while we worked
    if not _same_file(p, st.st_size, st.st_mtime_ns, sha):
        row = current()
        _cleanup_unfinished(row)
        raise _Skip("source changed during encoding; original left untouched, compressed file discarded")

    # 6. vault the original (copy + verify), then commit
    vault_path, expires = None, None
    if disposition == "vault":
        if ctx.vault is None:
            disposition = "keep"
            reasons.append("no vault configured: the original is kept")
        else:
            days = params.get("retention_days", 30)
            expires = ctx.now() + dt.timedelta(days=int(days))
            vault_path = str(ctx.vault.put(p, sha, expires_at=expires, source_path=sp))
            _fault("vaulted")
    step(COMMITTED, kind="committed", disposition=disposition, vault_path=vault_path, vault_expires_at=expires,
         original_status=ORIG_PRESENT if disposition in ("replace", "vault") else ORIG_KEPT,
         committed_at=ctx.now(), reasons=reasons)
    _fault("committed")

    # 7. only now may the original go
    if disposition in ("replace", "vault"):
        if _same_file(p, st.st_size, st.st_mtime_ns, sha):
            _unlink_durable(p)
            _fault("removed")
            step(COMMITTED, kind="original_removed", original_status=ORIG_REMOVED)
        else:
            step(COMMITTED, kind="original_changed", original_status=ORIG_REMOVED,
                 error="the original was overwritten after verification; the new content is a new version")
    out = _outcome(current(), recovered=recovered)
    out.fallback = fallback
    return out


def _tmp_for(final: Path, file_id: int) -> Path:
    """The temp name for a compressed file: fixed per row, so recovery knows what to clean."""
    return final.with_name(f"{atomic.TMP_PREFIX}{final.name}.{file_id}.part")


def _set_mode_owner(fd: int, mode: int, owner: tuple[int, int] | None) -> None:
    if owner is not None and os.geteuid() == 0:
        try:
            os.fchown(fd, *owner)
        except OSError:  # e.g. a filesystem without owners: the mode still applies
            pass
    os.fchmod(fd, mode & 0o7777)


def write_new(path: Path, data: bytes, tmp: Path, *, mode: int | None = None,
              owner: tuple[int, int] | None = None) -> None:
    """Write a file that must not exist yet, crash-safely: temp (fsynced) -> hard link to the
    final name (fails instead of clobbering) -> drop temp -> fsync the directory. ``mode`` and
    ``owner`` (the original's) are applied so the replacement is as readable as the original."""
    tmp.unlink(missing_ok=True)  # a leftover of an earlier crash
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            _set_mode_owner(fd, mode if mode is not None else 0o644, owner)
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        _fault("during_write")
        try:
            os.link(tmp, path)
        except OSError as e:  # filesystems without hard links: rename, after checking the name is free
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK) or path.exists():
                raise
            os.rename(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    atomic.fsync_dir(path.parent)


def _encode(ctx, img, data, action, params, regions) -> tuple[Optional[Encoded], str]:
    if action == "lossless":
        try:
            blob, ext = lossless.compress(data)
        except lossless.LosslessUnsupported as e:
            return None, f"lossless recompression not possible ({e}); original kept"
        if len(blob) >= len(data):
            return None, f"lossless version not smaller ({len(blob)} >= {len(data)} bytes); original kept"
        return Encoded(blob, ext, "jxl-jpeg" if ext == lossless.JXL_EXT else "axl"), ""
    try:
        enc = ctx.codec.encode(img, params, regions)
    except ArchiverError as e:  # e.g. no weights for the configured backbone: protect, don't fail
        return None, f"diffusion codec unavailable ({e})"
    except Exception as e:  # a codec bug must not stop the file from being archived safely
        return None, f"diffusion codec error ({type(e).__name__}: {e})"
    if len(enc.data) >= len(data):
        return None, f"diffusion output not smaller ({len(enc.data)} >= {len(data)} bytes)"
    return enc, ""


def _verify_written(ctx, cp: Path, csha: str, img: LoadedImage, data: bytes, sha: str, action, params, regions):
    """Re-read the file from disk and check it decodes to what the policy accepts."""
    disk = cp.read_bytes()
    if hashlib.sha256(disk).hexdigest() != csha:
        return False, {}, "the compressed file does not read back identically"
    if action == "lossless":
        try:
            back = lossless.restore(disk)
        except ArchiverError as e:
            return False, {}, f"lossless file does not decode ({e})"
        if hashlib.sha256(back).hexdigest() == sha:
            return True, {"psnr": None, "ms_ssim": 1.0, "reconstruction_sha256": sha, "restore_exact": "bytes"}, ""
        if lossless.same_pixels(back, data):
            return True, {"psnr": None, "ms_ssim": 1.0, "reconstruction_sha256": hashlib.sha256(back).hexdigest(),
                          "restore_exact": "pixels"}, ""
        return False, {}, "lossless restore differs from the original"
    try:
        recon = ctx.codec.decode(disk)
    except Exception as e:  # whatever the reason, an unverifiable file is not a replacement
        return False, {}, f"compressed file does not decode ({type(e).__name__}: {e})"
    qual = _quality(img, recon, regions)
    why = _guard(qual, params.get("floor") or {})
    if qual.get("size_mismatch"):
        why = "reconstruction has the wrong size"
    qual["reconstruction_sha256"] = image_digest(recon)
    qual["restore_exact"] = "approx"
    return why is None, qual, why


def _dry_run(p: Path, ctx: ArchiveContext) -> ArchiveOutcome:
    """Classify and encode in memory only: what would happen, with real sizes; nothing written."""
    sp = str(p)
    try:
        data, st = _file_facts(p)
        img = load_image(data, max_pixels=ctx.max_pixels)
    except (OSError, InputError) as e:
        return ArchiveOutcome(sp, "dry-run", action="skip", error=str(e).replace("<bytes>", sp))
    with ctx.catalog.session() as s:
        tags = q.tags_for(s, sp)
    try:
        d = _decide(p, ctx, img, tags)
    except InputError as e:
        return ArchiveOutcome(sp, "dry-run", action="skip", error=str(e))
    action, reasons, fallback = d.action, list(d.reasons), None
    params = dict(d.params or {})
    out = ArchiveOutcome(sp, "dry-run", action=action, rule=d.rule, reasons=reasons, size_before=len(data),
                         size_after=len(data), disposition=params.get("original"))
    regions = [list(map(int, b)) for b in (d.protected_regions or [])]
    if action == "diffusion" and ctx.codec is None:
        action, fallback = "lossless", "no diffusion codec available"
    while action in ("diffusion", "lossless"):
        enc, why = _encode(ctx, img, data, action, params, regions)
        if enc is None:
            reasons.append(why)
            if action == "diffusion":
                fallback, action = why, "lossless"
                continue
            action = "keep"
            break
        if action == "diffusion":
            try:
                qual = _quality(img, ctx.codec.decode(enc.data), regions)
                why = _guard(qual, params.get("floor") or {})
            except Exception as e:
                qual, why = {}, f"compressed file does not decode ({type(e).__name__}: {e})"
            out.psnr, out.ms_ssim, out.bpp = qual.get("psnr"), qual.get("ms_ssim"), enc.bpp
            if why:
                reasons.append(why)
                fallback, action = why, "lossless"
                continue
        out.size_after = len(enc.data)
        break
    out.action, out.fallback = action, fallback
    if action == "keep":
        out.disposition = "keep"
    return out
