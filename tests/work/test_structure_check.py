"""The global structure check (issue 28): a lossy reconstruction whose perceptual hash is no
longer the original's (beyond the near-duplicate thresholds) fails like any other floor, with the
reason recorded, even where the rule's floor lets anything through."""

import io

from PIL import Image, ImageOps

from archiver.catalog import queries as q
from archiver.catalog.models import FileVersion
from archiver.codecs import Encoded, Exactness
from archiver.codecs.base import Codec
from archiver.errors import ContainerError
from archiver.policy.engine import parse_policy_text
from archiver.testing.catalog import FakeCodec, make_context, write_jpeg
from archiver.work import archive_file

#: a generative rule whose floor lets anything through: only the structure check stands
POLICY = """
version: 1
name: structure
defaults:
  floor: {min_psnr: 0.0, min_ms_ssim: 0.0, min_region_psnr: 0.0}
  original: replace
rules:
  - name: generative
    when:
      path: ["**/gen/**"]
    action: diffusion
    allow_generative: true
    bpp: 0.5
default:
  action: lossless
"""


def _ctx(tmp_path, codec):
    ctx = make_context(tmp_path / "state", codec=codec)
    ctx.policy = parse_policy_text(POLICY, "structure")
    return ctx


class InventingCodec(Codec):
    """A 'generative' stand-in whose decode gives another picture: the original turned upside
    down and mirrored (the same pixels' statistics, another structure)."""

    name = "diffusion"
    ext = ".dlc"
    exactness = Exactness.APPROX

    def encode(self, source, target) -> Encoded:
        b = io.BytesIO()
        ImageOps.flip(ImageOps.mirror(source.image.rgb)).save(b, "WEBP", quality=90)
        data = b"FAKEDLC1" + b.getvalue()
        return Encoded(data, self.name, self.version, self.ext, len(data) * 8 / source.pixels, "fake", "0" * 64)

    def decode(self, data: bytes) -> Image.Image:
        if not data.startswith(b"FAKEDLC1"):
            raise ContainerError("not a fake .dlc")
        return Image.open(io.BytesIO(data[8:])).convert("RGB")


def test_a_reconstruction_of_another_structure_fails_with_the_reason_recorded(tmp_path):
    ctx = _ctx(tmp_path, InventingCodec())
    try:
        src = write_jpeg(tmp_path / "c" / "gen" / "a.jpg", seed=7, size=(256, 192))
        o = archive_file(src, ctx)
        assert o.action == "lossless" and o.fallback and "structure check" in o.fallback
        with ctx.catalog.session() as s:
            r = q.latest_version(s, str(src))
            kinds = [(e.kind, (e.detail or {}).get("reasons")) for e in q.events_for(s, s.get(FileVersion, r.id))]
        assert any(k == "fallback" and any("structure check" in x for x in (why or [])) for k, why in kinds)
    finally:
        ctx.catalog.close()


def test_a_faithful_lossy_reconstruction_passes_and_records_its_distances(tmp_path):
    ctx = _ctx(tmp_path, FakeCodec())
    try:
        src = write_jpeg(tmp_path / "c" / "gen" / "a.jpg", seed=7, size=(256, 192))
        o = archive_file(src, ctx)
        assert o.action == "diffusion", o
        with ctx.catalog.session() as s:
            r = q.latest_version(s, str(src))
        st = r.codec_params["structure"]
        assert 0 <= st["phash_distance"] <= 14 and 0 <= st["dhash_distance"] <= 13
    finally:
        ctx.catalog.close()


def test_a_policy_may_widen_the_structure_limits_within_64_bits():
    import pytest

    from archiver.errors import PolicyError

    ok = parse_policy_text(POLICY.replace("bpp: 0.5", "bpp: 0.5\n    floor: {max_phash_distance: 20}"), "p")
    assert ok.rules[0].params["floor"]["max_phash_distance"] == 20.0
    with pytest.raises(PolicyError, match="max_phash_distance is a number of bits"):
        parse_policy_text(POLICY.replace("bpp: 0.5", "bpp: 0.5\n    floor: {max_phash_distance: 65}"), "p")
