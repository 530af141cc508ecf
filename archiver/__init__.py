"""archiver: storage-tier archival of image collections with a latent-diffusion codec."""

__version__ = "0.1.0"
