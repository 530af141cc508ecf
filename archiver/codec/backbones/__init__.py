"""Latent diffusion backbones behind one interface (base.Backbone)."""
