"""Writers: the dry run runs the very same steps as the real one, with writers that change
nothing; the state machine still applies to its detached row."""

import pytest

from archiver.catalog.models import FileVersion
from archiver.testing.catalog import make_context, write_jpeg, write_png
from archiver.errors import CatalogError
from archiver.work import Job, archive_file
from archiver.work.writers import DryWriters


@pytest.mark.parametrize("kind,expect", [("tex", "diffusion"), ("strict", "lossless"), ("plain", "lossless"),
                                         ("keep", "keep")])
def test_dry_run_reaches_the_action_the_real_run_reaches(tmp_path, kind, expect):
    src = write_jpeg(tmp_path / "c" / kind / "a.jpg", size=(160, 120))
    before = sorted(p.name for p in src.parent.iterdir()), src.read_bytes()
    dry = make_context(tmp_path / "dry", dry_run=True)
    real = make_context(tmp_path / "real")
    try:
        d = archive_file(src, dry)
        assert (sorted(p.name for p in src.parent.iterdir()), src.read_bytes()) == before
        with dry.catalog.session() as s:
            assert s.query(FileVersion).count() == 0
        r = archive_file(src, real)
        assert d.state == "dry-run" and d.action == r.action == expect
        assert d.fallback == r.fallback  # the strict floor refuses the diffusion result in both
        if expect != "keep":
            assert d.size_after == r.size_after - (r.size_before if r.original_status == "kept" else 0)
    finally:
        dry.catalog.close()
        real.catalog.close()


def test_dry_run_reports_bad_input_without_a_row(tmp_path):
    src = write_png(tmp_path / "c" / "plain" / "a.png")
    src.write_bytes(b"not an image")
    c = make_context(tmp_path / "state", dry_run=True)
    try:
        o = archive_file(src, c)
        assert o.state == "dry-run" and o.action == "skip" and "not an image" in o.error
    finally:
        c.catalog.close()


def test_dry_writers_enforce_the_state_machine(tmp_path):
    c = make_context(tmp_path / "state", dry_run=True)
    try:
        w = DryWriters(c)
        job = Job(tmp_path / "x.jpg")
        w.record(job, "discovered")
        with pytest.raises(CatalogError, match="illegal state change discovered -> verified"):
            w.record(job, "verified")
        w.write_artifact(job, tmp_path / "x.jpg.jxl", b"data")
        assert w.read_artifact(tmp_path / "x.jpg.jxl") == b"data" and not (tmp_path / "x.jpg.jxl").exists()
        assert w.remove_original(job) is None
    finally:
        c.catalog.close()
