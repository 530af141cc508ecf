"""Deterministic mutation fuzzing shared by the parser tests (``.dlc`` container, lossless
``.jxl``/``.axl``): bit flips, byte changes, truncations, insertions, splices and random bytes,
from valid seeds. ``run`` feeds ``n`` inputs to ``parse`` and returns (inputs, documented errors,
other exceptions with an example each)."""

from __future__ import annotations

import random
from typing import Callable


def mutate(seed_data: bytes, rng: random.Random) -> bytes:
    b = bytearray(seed_data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
        op = rng.randrange(7)
        if op == 0 and b:  # bit flip
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:  # interesting byte
            b[rng.randrange(len(b))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF))
        elif op == 2 and b:  # truncate
            del b[rng.randrange(len(b)):]
        elif op == 3:  # insert
            i = rng.randrange(len(b) + 1)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        elif op == 4 and len(b) > 8:  # delete a run
            i = rng.randrange(len(b) - 4)
            del b[i:i + rng.randrange(1, 5)]
        elif op == 5 and b:  # 32-bit length field set to something odd
            i = rng.randrange(max(1, len(b) - 4))
            b[i:i + 4] = rng.choice((0, 1, 0xFFFFFFFF, 0x7FFFFFFF, len(b))).to_bytes(4, rng.choice(("big", "little")))
        elif op == 6:  # random bytes
            return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
    return bytes(b)


def run(parse: Callable[[bytes], object], seeds: list[bytes], n: int, documented: tuple[type, ...],
        seed: int = 0, reseal: Callable[[bytes], bytes] | None = None) -> dict:
    rng = random.Random(seed)
    out = {"inputs": 0, "documented_errors": 0, "accepted": 0, "other": {}}
    for k in range(n):
        data = mutate(seeds[k % len(seeds)], rng)
        if reseal is not None and k % 2:
            data = reseal(data)  # past the checksum: the field parser itself is exercised
        out["inputs"] += 1
        try:
            parse(data)
            out["accepted"] += 1
        except documented:
            out["documented_errors"] += 1
        except Exception as e:  # noqa: BLE001 - what the test is looking for
            out["other"].setdefault(f"{type(e).__name__}: {e}"[:200], data[:64].hex())
    return out
