"""The DDIM sampler on its own: its schedule of steps and its arithmetic per prediction type."""

import math

import pytest
import torch

from archiver.codecs.diffusion.sampler import ddim, ddim_timesteps
from archiver.errors import UsageError


def test_timesteps_descend_from_t_and_never_exceed_the_steps():
    assert ddim_timesteps(100, 4) == [100, 75, 50, 25]
    assert ddim_timesteps(3, 10) == [3, 2, 1], "fewer steps than asked when t is small"
    assert ddim_timesteps(0, 4) == [] and ddim_timesteps(50, 0) == []


def _oracle(x0, ac, prediction):
    """A denoiser that knows the clean latent: DDIM must then land exactly on it."""
    def out(z, t):
        a = float(ac[t])
        z = z.double()
        eps = (z - math.sqrt(a) * x0) / math.sqrt(1 - a)
        if prediction == "epsilon":
            return eps.float()
        if prediction == "v_prediction":
            return (math.sqrt(a) * eps - math.sqrt(1 - a) * x0).float()
        return x0.float()
    return out


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_a_perfect_denoiser_recovers_the_clean_latent(prediction):
    ac = torch.linspace(0.999, 0.01, 1000, dtype=torch.float64)
    x0 = torch.randn(1, 4, 3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y_hat = x0 + 0.3 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    z = ddim(_oracle(x0, ac, prediction), ac, prediction, y_hat.float(), 400, 4)
    assert torch.allclose(z.double(), x0, atol=1e-4)


def test_no_steps_returns_the_latent_untouched_and_bad_prediction_is_refused():
    ac = torch.linspace(0.999, 0.01, 1000)
    y = torch.ones(1, 1, 2, 2)
    assert ddim(lambda z, t: z, ac, "epsilon", y, 0, 4) is y
    with pytest.raises(UsageError, match="prediction type"):
        ddim(lambda z, t: z, ac, "flow", y, 10, 2)


def test_stochastic_ddim_is_seeded_by_the_stream():
    """eta > 0 adds fresh noise each step: the same stream (seed) gives the same latent, another
    stream other noise, and eta = 0 is the deterministic sampler bit for bit."""
    from archiver.codecs.diffusion.sampler import stream_noise, stream_seed

    ac = torch.linspace(0.999, 0.01, 1000, dtype=torch.float64)
    x0 = torch.randn(1, 4, 3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y_hat = (x0 + 0.3).float()
    def den(z, t):  # not an oracle (an oracle removes any noise added earlier): noise must matter
        return 0.1 * z
    seed = stream_seed(b"latent section bytes")
    assert seed == stream_seed(b"latent section bytes") != stream_seed(b"other bytes")
    a = ddim(den, ac, "epsilon", y_hat, 400, 4, eta=1.0, noise=stream_noise(seed))
    b = ddim(den, ac, "epsilon", y_hat, 400, 4, eta=1.0, noise=stream_noise(seed))
    c = ddim(den, ac, "epsilon", y_hat, 400, 4, eta=1.0, noise=stream_noise(seed + 1))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.equal(ddim(den, ac, "epsilon", y_hat, 400, 4), ddim(den, ac, "epsilon", y_hat, 400, 4, eta=0.0))
    with pytest.raises(ValueError, match="noise source"):
        ddim(den, ac, "epsilon", y_hat, 400, 4, eta=1.0)


def test_stochastic_ddim_keeps_the_marginal_variance():
    """With a perfect denoiser of a known x0, DDIM with eta = 1 still lands on x0 (the noise it
    adds is exactly what the following steps remove); the last step adds none."""
    from archiver.codecs.diffusion.sampler import stream_noise

    ac = torch.linspace(0.999, 0.01, 1000, dtype=torch.float64)
    x0 = torch.randn(1, 4, 3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = ddim(_oracle(x0, ac, "epsilon"), ac, "epsilon", (x0 + 0.2).float(), 300, 4, eta=1.0, noise=stream_noise(3))
    assert torch.allclose(z.double(), x0, atol=1e-4)
