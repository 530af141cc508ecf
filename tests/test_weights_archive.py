"""The earlier releases of the tiny weights live in their own data package
(packages/archiver-weights-archive), outside the runtime wheel. With it installed, old files decode
(tests/test_codec_lookup.py, tests/test_tiny.py); without it, an old file is refused with one line
that names what to install, and an exit code, never a traceback or a wrong image."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from archiver.codecs.diffusion import container, pipeline
from archiver.codecs.diffusion.backbones import tiny
from archiver.errors import WeightsMismatchError

DATA = Path(__file__).parent / "data" / "dlc"
OLD = sorted(p for p in DATA.glob("*.dlc") if p.name[:2] in ("r1", "r2"))
needs_weights = pytest.mark.skipif(not (tiny.WEIGHTS_DIR / tiny.WEIGHTS_FILE).is_file(),
                                   reason="no shipped tiny weights in archiver/weights")


def test_the_runtime_package_ships_only_the_current_release():
    assert not (tiny.WEIGHTS_DIR / "releases").exists()
    assert sorted(p.name for p in tiny.WEIGHTS_DIR.iterdir() if not p.name.startswith("__")) == \
        ["tiny.json", "tiny.safetensors"]


def test_every_earlier_release_is_in_the_archive_by_its_digest():
    pytest.importorskip("archiver_weights_archive")
    assert {tiny.weights_digest(d): d.name for d in tiny.RELEASES_DIR.iterdir() if d.is_dir()} == \
        tiny.EARLIER_RELEASES
    for digest in tiny.EARLIER_RELEASES:
        assert tiny.find_release(digest) is not None
    assert {container.read_header(p.read_bytes()).weights_sha256 for p in OLD} <= set(tiny.EARLIER_RELEASES)


@needs_weights
@pytest.mark.parametrize("path", OLD, ids=[p.stem for p in OLD])
def test_an_old_file_without_the_archive_names_what_to_install(path, monkeypatch, tmp_path):
    monkeypatch.setattr(tiny, "RELEASES_DIR", tmp_path / "no-archive")
    with pytest.raises(WeightsMismatchError) as e:
        pipeline.decode_bytes(path.read_bytes())
    msg = str(e.value)
    assert "\n" not in msg and e.value.exit_code == 5
    assert "archiver-weights-archive" in msg and "pip install -e packages/archiver-weights-archive" in msg
    assert tiny.EARLIER_RELEASES[container.read_header(path.read_bytes()).weights_sha256] in msg
    # the archive and restore paths hand in the current backbone: the same refusal
    with pytest.raises(WeightsMismatchError, match="archiver-weights-archive"):
        pipeline.decode_bytes(path.read_bytes(), tiny.load_tiny(device="cpu"))


@needs_weights
def test_archiver_decode_without_the_archive_says_it_in_one_line(tmp_path):
    """As a user meets it: `archiver decode` of a release-1 file where the data package is not
    installed (hidden from the import system) exits 5 with one line, no traceback."""
    src = next(p for p in OLD if p.name.startswith("r1"))
    code = ("import sys; sys.modules['archiver_weights_archive'] = None; "
            "from archiver.app.main import main; main()")
    r = subprocess.run([sys.executable, "-c", code, "decode", str(src), str(tmp_path / "out.png")],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "ARCHIVER_HOME": str(tmp_path / "home")})
    assert r.returncode == 5, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("archiver: error: ") and "pip install -e packages/archiver-weights-archive" in lines[0]
    assert not (tmp_path / "out.png").exists()
