"""Storage: atomic writes, the vault of originals, lossless recompression."""
