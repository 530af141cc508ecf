"""Perceptual likeness of two pictures: pHash and dHash (imagehash, 64 bits each, stored in the
catalog as 16 hex digits), their Hamming distance, the near-duplicate thresholds (chosen on
``train/`` by ``bench/near_duplicates.py``; raw counts in docs/operations.md), and the 16-bit
bands the catalog indexes so that a search for near hashes never scans it.

The bands are multi-index hashing (Norouzi et al., 2012): the 64 bits are cut into 4 bands of
16; two hashes within ``d`` bits agree within ``d // 4`` bits on at least one band (pigeonhole),
so looking up, per band, every value within ``d // 4`` bits of the query's finds every hash
within ``d``, exactly, through the bands' indexes."""

from __future__ import annotations

from itertools import combinations

BITS = 64
BANDS = 4
BAND_BITS = BITS // BANDS
#: near duplicates: pHash within PHASH_MAX bits *and* dHash within DHASH_MAX bits (measured on
#: train/ by bench/near_duplicates.py: resized, re-saved JPEG q70 and slightly cropped copies)
PHASH_MAX = 14
DHASH_MAX = 13


def hashes(rgb) -> tuple[str, str]:
    """(pHash, dHash) of a PIL image as 16 hex digits each: what discover records."""
    import imagehash  # heavy: imagehash (numpy, scipy), which the leaves do not load at import

    return str(imagehash.phash(rgb)), str(imagehash.dhash(rgb))


def as_int(h: str) -> int:
    return int(h, 16)


def distance(a: str, b: str) -> int:
    """Hamming distance of two hex hashes."""
    return (as_int(a) ^ as_int(b)).bit_count()


def bands(h: str | None) -> tuple[int | None, ...]:
    """The hash's four 16-bit bands, most significant first (Nones for no hash)."""
    if not h:
        return (None,) * BANDS
    v = as_int(h)
    return tuple((v >> (BAND_BITS * (BANDS - 1 - i))) & 0xFFFF for i in range(BANDS))


def band_probes(value: int, radius: int) -> list[int]:
    """Every 16-bit value within ``radius`` bits of ``value`` (itself first)."""
    out = [value]
    for r in range(1, radius + 1):
        for bits in combinations(range(BAND_BITS), r):
            x = value
            for b in bits:
                x ^= 1 << b
            out.append(x)
    return out


def probes(h: str, max_distance: int) -> list[list[int]]:
    """Per band, the values to look up so that every hash within ``max_distance`` of ``h`` is found."""
    return [band_probes(b, max_distance // BANDS) for b in bands(h)]


def _popcount(x):
    """Bits set in each uint64 of ``x`` (SWAR; numpy < 2 has no bitwise_count)."""
    import numpy as np  # heavy: numpy, which the leaves do not load at import

    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


def near_pairs(phashes: list[str], dhashes: list[str], *, phash_max: int = PHASH_MAX, dhash_max: int = DHASH_MAX,
               block: int = 512, progress=None):
    """Every pair (i, j), i < j, of near duplicates among the given hashes: all pairs compared,
    a block of rows at a time, vectorised (pHash first, dHash only where the pHash is near).
    ``progress(iterable, total=, desc=)``: the caller's view of the work."""
    import numpy as np  # heavy: numpy, which the leaves do not load at import

    ph = np.array([as_int(h) for h in phashes], dtype=np.uint64)
    dh = np.array([as_int(h) for h in dhashes], dtype=np.uint64)
    starts = range(0, len(ph), block)
    if progress is not None:
        starts = progress(starts, total=len(starts), desc="comparing")
    for s in starts:
        a = ph[s:s + block, None]
        close = _popcount(a ^ ph[None, s:]) <= phash_max
        ii, jj = np.nonzero(close)
        ii, jj = ii + s, jj + s
        keep = (jj > ii) & (_popcount(dh[ii] ^ dh[jj]) <= dhash_max)
        yield from zip(ii[keep].tolist(), jj[keep].tolist())


def near(ph_a: str | None, dh_a: str | None, ph_b: str | None, dh_b: str | None, *,
         phash_max: int = PHASH_MAX, dhash_max: int = DHASH_MAX) -> bool:
    """Whether two pictures are near duplicates: both hashes within their thresholds."""
    if not (ph_a and ph_b and dh_a and dh_b):
        return False
    return distance(ph_a, ph_b) <= phash_max and distance(dh_a, dh_b) <= dhash_max
