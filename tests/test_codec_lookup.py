"""backbones.lookup: the backbone a .dlc names, earlier shipped releases included.

The files in tests/data/dlc were written before the codec was split into modules, with two
releases of the embedded weights; they must keep decoding to the pixels they decoded to then.
"""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from archiver.codecs.diffusion import container, pipeline
from archiver.codecs.diffusion.backbones.lookup import backbone_for
from archiver.testing.codec import PoolBackbone
from archiver.errors import UsageError, WeightsMismatchError

DATA = Path(__file__).parent / "data" / "dlc"
OLD_FILES = sorted(DATA.glob("*.dlc"))
SHIPPED = Path(__file__).resolve().parents[1] / "archiver" / "weights" / "tiny.safetensors"
needs_weights = pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped tiny weights in archiver/weights")


def _close(a: np.ndarray, b: np.ndarray) -> None:
    """Bit-identical on the machine that wrote them; another CPU's kernels may round a rare pixel
    one or two levels the other way, so that much (and no more) is allowed."""
    assert a.shape == b.shape
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 2 and (diff == 0).mean() >= 0.99, (diff.max(), (diff == 0).mean())


@needs_weights
@pytest.mark.parametrize("path", OLD_FILES, ids=[p.stem for p in OLD_FILES])
def test_files_written_before_the_split_still_decode(path):
    from archiver.codecs.diffusion.backbones.tiny import load_tiny

    data = path.read_bytes()
    want = Image.open(path.with_suffix(".decoded.png"))
    alone = pipeline.decode_bytes(data)  # the backbone the header names, found by digest
    assert alone.image.mode == want.mode and alone.image.size == want.size
    _close(np.asarray(alone.image), np.asarray(want))
    # the archive and restore paths hand in the configured (current) backbone
    _close(np.asarray(pipeline.decode_bytes(data, load_tiny(device="cpu")).image), np.asarray(want))


def test_old_fixtures_are_there():
    assert len(OLD_FILES) >= 5 and {p.name[:2] for p in OLD_FILES} == {"r1", "r2", "r3"}


def test_unknown_weights_are_refused_not_guessed():
    pool = PoolBackbone()
    header = container.Header(backbone_id=pool.id, weights_sha256="ab" * 32, width=8, height=8, mode="RGB",
                              stride=pool.stride, latent_channels=pool.latent_channels, latent_height=1,
                              latent_width=1, entropy_kind=0, t=0, steps=0, s=1.0, mu=[0.0] * pool.latent_channels,
                              delta=[1.0] * pool.latent_channels)
    with pytest.raises(WeightsMismatchError, match="same weights"):
        backbone_for(header, pool)


def test_a_diffusers_file_without_a_model_is_a_clear_error():
    pool = PoolBackbone()
    header = container.Header(backbone_id="diffusers", weights_sha256="ab" * 32, width=8, height=8, mode="RGB",
                              stride=8, latent_channels=4, latent_height=1, latent_width=1, entropy_kind=0, t=0,
                              steps=0, s=1.0, mu=[0.0] * 4, delta=[1.0] * 4)
    assert pool.id != "diffusers"
    with pytest.raises(UsageError, match="needs a model"):
        backbone_for(header)
