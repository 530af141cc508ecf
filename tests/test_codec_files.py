"""codec.files: the codec on image files (atomic writes, output format from the suffix)."""

import numpy as np
import pytest
from PIL import Image

from archiver.codecs.diffusion import files
from archiver.testing.codec import PoolBackbone
from archiver.errors import UsageError


@pytest.fixture(scope="module")
def pool():
    return PoolBackbone()


def _photo(w, h):
    yy, xx = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([xx * 6, yy * 8, 128 + 0 * xx], -1).astype(np.uint8), "RGB")


def test_encode_and_decode_files(tmp_path, pool):
    src = tmp_path / "in.png"
    _photo(40, 30).save(src)
    r = files.encode_file(src, tmp_path / "x.dlc", backbone=pool, bpp=0.5)
    assert (tmp_path / "x.dlc").stat().st_size == len(r.data)
    files.decode_file(tmp_path / "x.dlc", tmp_path / "out.webp", backbone=pool)
    assert Image.open(tmp_path / "out.webp").format == "WEBP"
    files.decode_file(tmp_path / "x.dlc", tmp_path / "out", backbone=pool)
    assert Image.open(tmp_path / "out").format == "PNG"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".archiver-tmp")]
    with pytest.raises(UsageError):
        files.decode_file(tmp_path / "x.dlc", tmp_path / "out.nope", backbone=pool)
