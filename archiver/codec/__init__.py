"""The latent-diffusion codec (see docs/codec.md)."""
