"""Entropy models: exact integer round trips, and a training forward whose rate means bits."""

import pytest
import torch

from archiver.codecs.diffusion.entropy import (CheckerboardEntropyModel, ChannelGaussianEntropyModel, HyperpriorEntropyModel,
                                    build_entropy_model, get_entropy_model, rate_bits)


def _q(shape=(1, 4, 6, 7), scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.round(torch.randn(shape, generator=g) * scale)


@pytest.mark.parametrize("shape", [(1, 4, 1, 1), (1, 4, 6, 7), (1, 8, 13, 4)])
def test_generic_model_round_trip(shape):
    m = ChannelGaussianEntropyModel()
    q = _q(shape)
    q[0, 0, 0, 0] = 500  # far outside the table: escape coding must still be exact
    data = m.compress(q)
    assert torch.equal(m.decompress(data, shape), q)


def test_generic_model_spends_fewer_bits_on_smaller_values():
    m = ChannelGaussianEntropyModel()
    assert len(m.compress(_q((1, 4, 32, 32), 0.5))) < len(m.compress(_q((1, 4, 32, 32), 8.0)))


def test_hyperprior_trains_and_codes_exactly():
    torch.manual_seed(0)
    m = HyperpriorEntropyModel(latent_channels=4, hyper_channels=8)
    u = torch.randn(2, 4, 9, 10) * 2
    out = m(u)
    assert out["u_hat"].shape == u.shape
    assert set(out["likelihoods"]) == {"y", "z"}
    bits = rate_bits(out["likelihoods"])
    bits.backward()  # differentiable rate for training
    assert any(p.grad is not None for p in m.h_a.parameters())
    assert m.aux_loss().item() >= 0

    m.eval()
    m.update(force=True)
    q = _q((1, 4, 9, 10))
    data = m.compress(q)
    assert torch.equal(m.decompress(data, q.shape), q)
    # the real size is close to what the likelihoods promise (rANS overhead is small)
    with torch.no_grad():
        est = float(rate_bits(m(q)["likelihoods"])) / 8
    assert len(data) < est * 1.3 + 16


def test_hyperprior_state_dict_round_trip_decodes_the_same_bits():
    torch.manual_seed(1)
    m = HyperpriorEntropyModel(4, 8).eval()
    m.update(force=True)
    q = _q((1, 4, 8, 8))
    data = m.compress(q)
    m2 = HyperpriorEntropyModel(4, 8)
    m2.load_state_dict(m.state_dict())
    m2.eval()
    assert torch.equal(m2.decompress(data, q.shape), q)


def test_truncated_hyperprior_payload_is_an_error():
    m = HyperpriorEntropyModel(4, 8).eval()
    with pytest.raises(ValueError):
        m.decompress(b"\xff\xff\x00\x00abc", (1, 4, 8, 8))


def test_generic_model_picks_small_blocks_for_mixed_content_and_one_block_for_uniform():
    m = ChannelGaussianEntropyModel()
    mixed = _q((1, 4, 32, 32), 0.3)
    mixed[..., :, 16:] = _q((1, 4, 32, 16), 20.0, seed=1)  # flat left half, busy right half
    data = m.compress(mixed)
    assert data[0] in (8, 16) and torch.equal(m.decompress(data, mixed.shape), mixed)
    uniform = _q((1, 4, 32, 32), 0.3)
    data = m.compress(uniform)
    assert data[0] == 0 and torch.equal(m.decompress(data, uniform.shape), uniform)


# -- checkerboard mean-scale model (kind 2) ---------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 4, 1, 1), (1, 4, 9, 10), (1, 4, 13, 7)])
def test_checkerboard_encode_decode_agree_on_any_shape(shape):
    torch.manual_seed(0)
    m = CheckerboardEntropyModel(latent_channels=4, hyper_channels=8).eval()
    u = torch.randn(shape) * 3
    data, u_hat = m.encode(u)
    assert u_hat.shape == u.shape
    assert torch.equal(m.decode(data, shape), u_hat)
    assert (u_hat - u).abs().max() <= 0.5 + 1e-5  # rounding around the predicted mean


def test_checkerboard_state_dict_round_trip_and_damaged_payloads():
    torch.manual_seed(2)
    m = CheckerboardEntropyModel(4, 8).eval()
    m.update(force=True)
    u = torch.randn(1, 4, 8, 12) * 2
    data, u_hat = m.encode(u)
    m2 = build_entropy_model({"kind": "checkerboard", "latent_channels": 4, "hyper_channels": 8})
    m2.load_state_dict(m.state_dict())
    m2.eval()
    assert torch.equal(m2.decode(data, u.shape), u_hat)
    zlen = int.from_bytes(data[:4], "little")
    huge_anchors = data[:4 + zlen] + b"\xff\xff\xff\x00" + data[8 + zlen:]
    for bad in (b"", b"\xff\xff\x00\x00abc", huge_anchors):
        with pytest.raises(ValueError):
            m2.decode(bad, u.shape)


def test_bitstream_kind_must_match_the_backbone_model():
    class B:
        def __init__(self, model):
            self.model = model

        def entropy_model(self):
            return self.model

    hyper = HyperpriorEntropyModel(4, 8)
    assert get_entropy_model(1, B(hyper)) is hyper
    with pytest.raises(ValueError, match="does not have"):
        get_entropy_model(2, B(hyper))
    with pytest.raises(ValueError, match="unknown"):
        get_entropy_model(7, B(hyper))
