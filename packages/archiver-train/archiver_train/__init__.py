"""Training of the embedded tiny backbone (``archiver train``): autoencoder, latent denoiser,
per-channel quantization steps and entropy model, all resumable and seeded."""
