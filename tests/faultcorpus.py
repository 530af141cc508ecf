"""The crash corpus (issue 11), shared by tests/work/test_invariant.py and bench/fuzz_faults.py:
archive one file, crash at a step boundary (in process, or a real SIGKILL of another process),
harm the artifact (remove, corrupt, truncate, swap in another valid file), run recovery and
archive again, then ask what a user would: is the original still there, or does ``restore``
give it back as exactly as the catalog promises? ``trial`` returns the facts; a trial whose
original is neither on disk nor restorable has lost it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from archiver.catalog import queries as q
from archiver.testing.catalog import disk_problems, make_context, write_jpeg, write_png
from archiver.work import FAULT_STEPS, archive_file, recover_pending, restore

RUNNER = """
import sys
from archiver.work import archive_file
from archiver.testing.catalog import make_context
ctx = make_context(sys.argv[1])
print(archive_file(sys.argv[2], ctx).state)
"""

#: the directory (and so the test policy's rule) of each kind of file
KINDS = {"plain": "jpeg, lossless, replace (bytes back)", "png": "png, lossless, replace (pixels back)",
         "vault": "jpeg, lossless, vault", "tex": "diffusion (approximate)"}
HARMS = ("none", "remove", "corrupt", "truncate", "swap")


class Crash(BaseException):
    """A death nothing in archive catches (open transactions roll back as on a kill)."""


def crash_in_process(state: Path, src: Path, step: str) -> bool:
    """Archive ``src``, dying at ``step``; True when the run reached the step and died there (a
    trial whose crash never happened proves nothing)."""
    from unittest import mock

    from archiver.work import faults

    def fault(name):
        if name == step:
            raise Crash(name)

    ctx = make_context(state)
    try:
        with mock.patch.object(faults, "fault", fault):
            archive_file(src, ctx)
    except Crash:
        return True
    finally:
        ctx.catalog.close()
    return False


def crash_kill9(state: Path, src: Path, step: str) -> bool:
    r = subprocess.run([sys.executable, "-c", RUNNER, str(state), str(src)], env=dict(os.environ, ARCHIVER_FAULT=step),
                       capture_output=True, text=True, timeout=300)
    if r.returncode != -9:
        raise AssertionError(f"the run was not killed at {step}: rc {r.returncode}\n{r.stderr[-2000:]}")
    return True


def cases(kinds=tuple(KINDS), harms=HARMS) -> list[tuple[str, str, str]]:
    return [(kind, step, harm) for kind in kinds for step in FAULT_STEPS for harm in harms
            if not (kind != "vault" and step == "vaulted")]


def _original(root: Path, kind: str, seed: int) -> Path:
    if kind == "png":
        return write_png(root / kind / f"g{seed}.png", seed=seed, size=(160, 120))
    return write_jpeg(root / kind / f"a{seed}.jpg", seed=seed, size=(160 + seed % 5 * 8, 120))  # smaller as JPEG XL


def _artifact(ctx, src: Path) -> Path | None:
    with ctx.catalog.session() as s:
        r = q.latest_version(s, str(src))
    if r is not None and r.compressed_path:
        return Path(r.compressed_path)
    return next((p for p in src.parent.iterdir() if p.name.startswith(src.name) and p.suffix in (".jxl", ".dlc")), None)


def _harm(cp: Path | None, harm: str, other: Path | None) -> bool:
    if cp is None or not cp.exists() or harm == "none":
        return False
    if harm == "remove":
        cp.unlink()
    elif harm == "corrupt":
        b = bytearray(cp.read_bytes())
        b[len(b) // 2] ^= 0xFF
        cp.write_bytes(bytes(b))
    elif harm == "truncate":
        cp.write_bytes(cp.read_bytes()[: len(cp.read_bytes()) // 2])
    elif harm == "swap":  # another file's valid artifact in its place
        if other is None or not other.exists():
            return False
        shutil.copyfile(other, cp)
    return True


def trial(tmp: Path, kind: str, step: str, harm: str, crash=crash_in_process, seed: int = 5) -> dict:
    """One crash-then-harm trial in ``tmp``; returns what happened (``lost`` must be False)."""
    from archiver.codecs.lossless import format as lossless

    root = tmp / "c"
    src = _original(root, kind, seed)
    orig = src.read_bytes()
    other = None
    if harm == "swap":  # a finished archive of another file of the same kind, to swap in
        ctx = make_context(tmp / "state")
        try:
            o = archive_file(_original(root, kind, seed + 1000), ctx)
            other = Path(o.compressed_path) if o.compressed_path else None
        finally:
            ctx.catalog.close()
    crashed = crash(tmp / "state", src, step)
    ctx = make_context(tmp / "state")
    try:
        present = src.exists() and src.read_bytes() == orig
        harmed = _harm(_artifact(ctx, src), harm, other)
        recover_pending(ctx)
        out = archive_file(src, ctx)
        on_disk = src.exists() and src.read_bytes() == orig
        restored = exact = None
        if not on_disk:
            to = tmp / "restored"
            res = restore(ctx.catalog, [str(src)], vault=ctx.vault, codecs=ctx.codecs, to=to)
            ok = [r for r in res if r.status == "restored"]
            if ok:
                back, exact = Path(ok[0].dest).read_bytes(), ok[0].exact
                if exact == "bytes":
                    restored = back == orig
                elif exact == "pixels":
                    restored = lossless.content_digest(back) == lossless.content_digest(orig)
                else:  # approximate by policy: the decoded reconstruction the catalog recorded
                    restored = kind == "tex"
            else:
                restored = False
        problems = disk_problems(ctx, root)
        # lost: the original was there when the artifact was harmed and is neither on disk nor
        # restorable. An artifact harmed after a verified removal (step 'removed', no vault) is the
        # damage verify reports (``problems``), not a loss by archiver.
        return {"kind": kind, "step": step, "harm": harm, "seed": seed, "crashed": crashed, "present_after_crash": present,
                "harmed": harmed, "state": out.state, "action": out.action, "on_disk": on_disk,
                "restored": restored, "exact": exact, "lost": present and not on_disk and not restored,
                "problems": problems}
    finally:
        ctx.catalog.close()


# -- races: the user changes the original's name while archiver removes it (issue 22 F1) -----------
#: where the race happens: after the commit (before the gate's checks), after every slow check (the
#: original about to be taken), after it was taken (not yet compared)
RACE_POINTS = ("committed", "taking", "taken")
#: what the user does to the original's name (``held_writer``: a process that opened it for writing
#: at that point writes through its descriptor after archive is done)
RACES = ("rename_over", "rewrite", "rewrite_keep_mtime", "held_writer", "symlink", "delete")


def race_cases(kinds=tuple(KINDS)) -> list[tuple[str, str, str]]:
    return [(kind, point, race) for kind in kinds for point in RACE_POINTS for race in RACES]


def _new_content(path: Path, kind: str, seed: int) -> bytes:
    tmp = path.with_name(f"racer-{seed}.tmp")
    (write_png if kind == "png" else write_jpeg)(tmp, seed=seed, size=(168, 120))
    data = tmp.read_bytes()
    tmp.unlink()
    return data


class _Racer:
    """Does one race to ``src`` when called; ``last`` is what the user's name should hold now."""

    def __init__(self, src: Path, kind: str, race: str, seed: int):
        self.src, self.kind, self.race, self.seed = src, kind, race, seed
        self.last: bytes | None = None  # the user's newest content (None: the user deleted it)
        self.fd = None

    def __call__(self) -> None:
        src, race = self.src, self.race
        if race == "rename_over":
            data = _new_content(src, self.kind, self.seed)
            tmp = src.with_name("racer.tmp")
            tmp.write_bytes(data)
            os.rename(tmp, src)
            self.last = data
        elif race in ("rewrite", "rewrite_keep_mtime"):
            st = os.stat(src) if src.exists() else None
            old = src.read_bytes() if st else _new_content(src, self.kind, self.seed)
            data = old[:-1] + bytes([old[-1] ^ 0x01])
            with open(src, "r+b" if st else "wb") as f:
                f.write(data)
            if st and race == "rewrite_keep_mtime":
                os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
            self.last = data
        elif race == "held_writer":
            self.fd = open(src, "r+b" if src.exists() else "w+b")
        elif race == "symlink":
            target = src.with_name("racer-target.bin")
            target.write_bytes(_new_content(src, self.kind, self.seed))
            if os.path.lexists(src):
                src.unlink()
            src.symlink_to(target)
            self.last = None  # a link is no photo of the user's; its target stays untouched (checked)
        elif race == "delete":
            if os.path.lexists(src):
                src.unlink()
            self.last = None

    def finish(self) -> None:
        """The held writer writes its change and closes (after archive returned)."""
        if self.fd is not None:
            self.fd.seek(0)
            old = self.fd.read()
            data = (old[:-1] + bytes([old[-1] ^ 0x01])) if old else _new_content(self.src, self.kind, self.seed)
            self.fd.seek(0)
            self.fd.write(data)
            self.fd.close()
            self.fd = None
            self.last = data


def _kept(ctx, src: Path, data: bytes) -> bool:
    """Whether ``data`` is on disk under ``src``'s name or beside it, or restorable exactly from a
    committed catalog row of ``src`` (archived as a version)."""
    import hashlib

    from archiver.catalog.models import COMMITTED, FileVersion
    from archiver.work.invariant import replacement_holds

    for p in src.parent.iterdir():
        if p.is_file() and not p.is_symlink() and p.read_bytes() == data:
            return True
    sha = hashlib.sha256(data).hexdigest()
    with ctx.catalog.session() as s:
        rows = [r for r in s.query(FileVersion).filter(FileVersion.path == str(src), FileVersion.sha256 == sha,
                                                          FileVersion.state == COMMITTED)]
    for r in rows:
        if ctx.vault is not None and ctx.vault.check(sha):
            return True
        held = replacement_holds(r, ctx.codecs)
        if held.ok and held.restored.exact in ("bytes", "pixels"):
            return True
        if held.ok and r.restore_exact == "approx":  # approximate by policy: the recorded reconstruction
            return True
    return False


def race_trial(tmp: Path, kind: str, point: str, race: str, *, kill: bool = False, seed: int = 5) -> dict:
    """One race: archive ``kind`` while the user does ``race`` at ``point`` (with ``kill``, the
    run is first killed -9 right after taking, and the race happens before the next run); then
    the next run (recovery, archive again). Lost: the original or the user's newest file is
    neither on disk nor restorable from the catalog."""
    from unittest import mock

    from archiver.work import faults

    root = tmp / "c"
    src = _original(root, kind, seed)
    orig = src.read_bytes()
    racer = _Racer(src, kind, race, seed + 500)
    fired = []
    if kill:
        fired.append(crash_kill9(tmp / "state", src, "taken"))
        racer()
    else:
        ctx = make_context(tmp / "state")

        def fault(name):
            if name == point and not fired:
                fired.append(name)
                racer()

        try:
            with mock.patch.object(faults, "fault", fault):
                archive_file(src, ctx)
        finally:
            ctx.catalog.close()
    racer.finish()
    ctx = make_context(tmp / "state")
    try:
        recover_pending(ctx)
        if os.path.lexists(src):
            archive_file(src, ctx)
        original_kept = _kept(ctx, src, orig)
        user_kept = racer.last is None or _kept(ctx, src, racer.last)
        link_target_ok = race != "symlink" or (src.parent / "racer-target.bin").is_file()
        from archiver.storage.atomic import TAKEN_PREFIX

        leftovers = [p.name for p in src.parent.iterdir() if p.name.startswith(TAKEN_PREFIX)]
        return {"kind": kind, "point": point, "race": race, "kill9": kill, "seed": seed, "raced": bool(fired),
                "original_kept": original_kept, "user_kept": user_kept, "link_target_ok": link_target_ok,
                "taken_left": leftovers,
                "lost": not (original_kept and user_kept and link_target_ok) or bool(leftovers)}
    finally:
        ctx.catalog.close()


__all__ = ["Crash", "FAULT_STEPS", "HARMS", "KINDS", "RACES", "RACE_POINTS", "cases", "crash_in_process",
           "crash_kill9", "race_cases", "race_trial", "trial"]
