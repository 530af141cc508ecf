"""Property: whatever step a run dies at (simulated in-process: an exception that nothing in
archive catches, so open transactions roll back as on a kill), optionally a second death during
the restart, optionally the file edited in between, the final run leaves catalog and disk in
agreement and every content that ever existed at the path restorable."""

import hashlib
import tempfile
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, given, settings, strategies as st

from archiver.work import faults as faults_mod
from archiver.work import FAULT_STEPS, archive_file
from archiver.catalog import queries as q
from archiver.catalog.models import COMMITTED
from archiver.work.restore import produce
from archiver.testing.catalog import disk_problems, make_context, write_jpeg
from archiver.work.verify import verify


class Crash(BaseException):
    pass


def run_with_fault(ctx, src, step):
    def fault(name):
        if name == step:
            raise Crash(name)

    with mock.patch.object(faults_mod, "fault", fault):
        try:
            return archive_file(src, ctx)
        except Crash:
            return None


def restorable(ctx, src, content: bytes, diffusion: bool) -> bool:
    if src.exists() and src.read_bytes() == content:
        return True
    digest = hashlib.sha256(content).hexdigest()
    with ctx.catalog.session() as s:
        rows = [r for r in q.versions(s, str(src)) if r.state == COMMITTED and r.sha256 == digest]
    for r in rows:
        data, source, exact = produce(r, ctx.vault, ctx.codecs)
        if data == content or (diffusion and source == "reconstruction"):
            return True
    return False


def has_copy(ctx, src, content: bytes) -> bool:
    """Whether a committed row holds a copy of ``content`` (compressed file or vault)."""
    digest = hashlib.sha256(content).hexdigest()
    with ctx.catalog.session() as s:
        return any(r.state == COMMITTED and (r.compressed_path or r.vault_path) and r.sha256 == digest
                   for r in q.versions(s, str(src)))


steps = st.sampled_from((None,) + FAULT_STEPS)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["plain", "vault", "keep", "tex", "strict"]), first=steps, second=steps,
       edit=st.booleans())
def test_any_crash_sequence_loses_nothing(kind, first, second, edit):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        ctx = make_context(d / "state")
        try:
            src = write_jpeg(d / "c" / kind / "a.jpg", seed=3)
            contents = [src.read_bytes()]
            run_with_fault(ctx, src, first)
            assert restorable(ctx, src, contents[0], kind == "tex")
            if edit:  # somebody overwrites (or re-creates) the file before the restart
                if src.exists() and not has_copy(ctx, src, contents[0]):
                    contents = []  # never archived: the user's edit replaced it, not us
                write_jpeg(src, seed=11)
                contents.append(src.read_bytes())
            run_with_fault(ctx, src, second)
            o = archive_file(src, ctx)
            assert o.state in (COMMITTED, "unchanged"), o
            assert disk_problems(ctx, d / "c") == []
            for c in contents:
                assert restorable(ctx, src, c, kind == "tex"), "a version was lost"
            assert verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs).mismatches == []
        finally:
            ctx.catalog.close()
