"""HEIC/HEIF and camera raw: read (pillow-heif, LibRaw), classified, raw kept untouched, HEIC kept
unless a codec beats the file itself by the policy's margin; the walk names what it leaves alone."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from archiver.catalog import queries as q
from archiver.codecs import Source
from archiver.codecs.bound import Codecs
from archiver.errors import InputError
from archiver.imageio import RAW_REASON, camera_raw_kind, load_image
from archiver.service import untaken
from archiver.service.watcher import walk
from archiver.testing.catalog import make_context, write_jpeg
from archiver.testing.formats import dng_bytes, heic_bytes, write_dng
from archiver.work import archive_file


def test_a_heic_is_read_with_its_exif():
    img = load_image(heic_bytes(seed=2, size=(96, 64)))
    assert img.original_format == "HEIF" and (img.width, img.height) == (96, 64) and img.camera_raw is None
    assert b"ArchiverTestPhone" in img.metadata.exif and img.unfaithful() == []


def test_a_dng_is_developed_by_libraw_and_known_as_camera_raw_by_its_bytes():
    img = load_image(dng_bytes(64, 48))  # no name: the DNGVersion tag tells
    assert img.camera_raw == "DNG" and img.original_format == "DNG" and (img.width, img.height) == (32, 24)
    assert img.rgb.getextrema() != ((0, 0), (0, 0), (0, 0)) and "LibRaw" in img.notes[0]
    assert any("camera raw" in u for u in img.unfaithful())  # no lossy codec may take it either


def test_camera_raw_kinds_by_name_and_by_signature():
    assert camera_raw_kind(b"anything", "/p/IMG_1.CR3") == "CR3" and camera_raw_kind(b"x", "/p/a.nef") == "NEF"
    assert camera_raw_kind(b"II*\x00\x10\x00\x00\x00CR\x02\x00") == "CR2"
    assert camera_raw_kind(b"FUJIFILMCCD-RAW 0201") == "RAF" and camera_raw_kind(b"\0\0\0\x18ftypcrx ") == "CR3"
    assert camera_raw_kind(b"II*\x00\x08\x00\x00\x00\x00\x00") is None and camera_raw_kind(b"\xff\xd8\xff") is None


def test_a_file_named_dng_that_libraw_cannot_read_gives_libraws_reason():
    with pytest.raises(InputError, match=r"^/p/camera\.dng: camera raw that LibRaw cannot read \(DNG: LibRaw\w*Error"):
        load_image(b"II*\x00 not really a raw file" * 4, name="/p/camera.dng")


def test_a_camera_raw_file_is_kept_untouched_with_the_reason_recorded(tmp_path):
    ctx = make_context(tmp_path / "state")
    src = write_dng(tmp_path / "c" / "vault" / "camera.dng")  # a rule that would vault and replace it
    before = src.read_bytes()
    o = archive_file(src, ctx)
    assert o.state == "committed" and src.read_bytes() == before and list(src.parent.iterdir()) == [src]
    with ctx.catalog.session() as s:
        row = q.latest_version(s, str(src))
    assert row.action == "keep" and row.disposition == "keep" and row.compressed_path is None and row.vault_path is None
    assert row.reasons[0].startswith(f"{RAW_REASON} (DNG)") and row.format == "DNG"
    ctx.catalog.close()


def _choice(data: bytes, **params):
    src = Source(load_image(data), data, [])
    ch = Codecs().choice("best", {"among": ["avif", "jxl"], "fallback": ["lossless"], "target": 70, **params})
    return ch, [(c.name, e.size) for c, e in ch.candidates(src)]


def test_a_heic_is_kept_when_no_codec_beats_the_file_itself_by_the_margin():
    data = heic_bytes(seed=1, size=(128, 96), quality=60)
    ch, made = _choice(data, jpeg_margin=0.95)
    assert made == []  # no lossless JPEG XL of its pixels either: it has no exact smaller form
    why = ch.why_chosen(None)
    assert why.startswith("original kept:") and "the HEIC/HEIF original itself less 95%" in why
    assert "lossless: HEIC/HEIF has no exact smaller form" in why


def test_the_walk_names_the_files_it_leaves_alone(tmp_path):
    for name in ("a.jpg", "b.heic", "c.dng", "notes.txt", "clip.mov", "mine.avif", "a.jpg.jxl", ".hidden.txt",
                 "layers.psd", "x.jpg.part"):
        (tmp_path / name).write_bytes(b"x")
    passed: list[tuple[str, str]] = []
    taken = [Path(p).name for p in walk(tmp_path, not_taken=passed)]
    assert taken == ["a.jpg", "b.heic", "c.dng"]
    groups = {g["type"]: g["reason"] for g in untaken.group(passed)}
    assert groups == {".txt": "not an image", ".mov": "video, not an image",
                      ".avif": "already AVIF/JPEG XL (a modern compressed format): left as it is",
                      ".psd": "an image type archiver does not read", ".part": "unfinished download or temporary file"}


def test_the_daemons_scan_logs_what_it_does_not_take(tmp_path, caplog):
    from archiver.config import Config
    from archiver.service.daemon import Daemon

    ctx = make_context(tmp_path / "state")
    root = tmp_path / "photos"
    write_jpeg(root / "a.jpg")
    write_dng(root / "camera.dng")
    (root / "notes.txt").write_text("hi")
    d = Daemon(config=Config(catalog_url=ctx.catalog.url, vault_dir=str(tmp_path / "state" / "vault"),
                             roots=[str(root)]))
    d.catalog = ctx.catalog
    d.guard = type("Up", (), {"check": staticmethod(lambda r: True)})()
    with caplog.at_level(logging.INFO, logger="archiver.service.daemon"):
        d._scan([str(root)])
    (rec,) = [r for r in caplog.records if r.getMessage() == "not taken"]
    assert rec.not_taken == [{"type": ".txt", "reason": "not an image", "files": 1, "examples": [str(root / "notes.txt")]}]
    assert sorted(Path(p).name for p in d.settle.pending()) == ["a.jpg", "camera.dng"]
    ctx.catalog.close()


def test_archive_of_a_folder_says_what_it_did_not_take(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from archiver.testing.catalog import make_policy

    photos = tmp_path / "photos"
    write_jpeg(photos / "a.jpg")
    write_dng(photos / "camera.dng")
    (photos / "notes.txt").write_text("hi")
    make_policy(tmp_path / "p.yaml")
    env = dict(os.environ, ARCHIVER_HOME=str(tmp_path / "home"), PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    r = subprocess.run([sys.executable, "-m", "archiver", "archive", str(photos), "--dry-run", "--json",
                        "--policy", str(tmp_path / "p.yaml")], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert sorted(Path(f["path"]).name for f in d["files"]) == ["a.jpg", "camera.dng"]
    assert [(g["type"], g["reason"]) for g in d["summary"]["not_taken"]] == [
        (".dng", "camera raw: kept untouched"), (".txt", "not an image")]


def test_the_policy_keeps_a_camera_raw_file_whatever_the_rule_says():
    from archiver.testing.catalog import make_policy

    d = make_policy().decide("/photos/vault/IMG_0001.NEF")  # by its name: nothing read
    assert d.action == "keep" and d.params["original"] == "keep" and d.reasons[0].startswith(f"{RAW_REASON} (NEF)")
    d = make_policy().decide(None, load_image(dng_bytes()))  # by its bytes, whatever its name
    assert d.action == "keep" and d.reasons[0].startswith(f"{RAW_REASON} (DNG)")
    assert make_policy().decide("/photos/vault/a.jpg").action == "lossless"
