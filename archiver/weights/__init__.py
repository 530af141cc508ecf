"""Shipped weights of the embedded tiny backbone (safetensors)."""
