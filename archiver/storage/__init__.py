"""Storage: atomic writes, the vault of originals, free space."""
