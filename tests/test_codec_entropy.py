"""Entropy models: exact integer round trips, and a training forward whose rate means bits."""

import pytest
import torch

from archiver.codec.entropy import ChannelGaussianEntropyModel, HyperpriorEntropyModel, rate_bits


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
