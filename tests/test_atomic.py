import os

import pytest

from archiver.storage import atomic


def test_write_bytes_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"old")
    atomic.write_bytes(p, b"new")
    assert p.read_bytes() == b"new"
    assert [x.name for x in tmp_path.iterdir()] == ["f.bin"]


def test_write_bytes_no_overwrite_keeps_existing(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        atomic.write_bytes(p, b"new", overwrite=False)
    assert p.read_bytes() == b"old"
    assert not any(atomic.is_temp_name(x) for x in tmp_path.iterdir())


def test_failed_write_cleans_temp(tmp_path, monkeypatch):
    def boom(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        atomic.write_bytes(tmp_path / "g.bin", b"x" * 10)
    assert list(tmp_path.iterdir()) == []


def test_copy_file_keeps_mtime(tmp_path):
    src = tmp_path / "a"
    src.write_bytes(b"abc")
    os.utime(src, (1_000_000, 1_000_000))
    dst = atomic.copy_file(src, tmp_path / "b")
    assert dst.read_bytes() == b"abc"
    assert int(dst.stat().st_mtime) == 1_000_000
