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


# -- the two targets (shared by the tests and bench/fuzz_faults.py) --------------------------------
def _dlc_header(**kw):
    from archiver.codecs.diffusion import container

    h = dict(backbone_id="tiny", weights_sha256="ab" * 32, width=7, height=5, mode="RGBA", stride=8,
             latent_channels=4, latent_height=1, latent_width=1, entropy_kind=0, t=42, steps=4, s=0.5,
             mu=[0.1, -0.2, 0.3, 0.0], delta=[1.0, 1.5, 0.5, 2.0], roi_factor=2.0, roi=[(0, 0, 1, 1)])
    h.update(kw)
    return container.Header(**h)


def _reseal(data: bytes) -> bytes:
    """A fresh checksum over mutated bytes, so the parser behind it is reached."""
    import hashlib

    from archiver.codecs.diffusion import container

    body = data[:-container.DIGEST_LEN] if len(data) > container.DIGEST_LEN else data
    return body + hashlib.sha256(body).digest()


def fuzz_dlc(n: int, seed: int) -> dict:
    """``container.unpack`` on ``n`` mutated .dlc files (half resealed): only ContainerError."""
    from archiver.codecs.diffusion import container
    from archiver.errors import ContainerError

    sections = {container.LATENT: b"\x01\x02\x03latent", container.ALPHA: b"alpha-png",
                container.EXIF: b"Exif\x00\x00MM", container.ICC: b"icc", container.XMP: b"<x:xmpmeta/>"}
    seeds = [container.pack(_dlc_header(), sections),
             container.pack(_dlc_header(roi=[], mode="L"), {container.LATENT: b"x"}),
             container.pack(_dlc_header(latent_channels=1, mu=[0.0], delta=[1.0], roi=[(1, 2, 3, 4)] * 3), sections),
             container.pack(_dlc_header(adapter_sha256="cd" * 32), sections),
             container.pack(_dlc_header(qmode=container.QMODE_BACKBONE, mu=[], delta=[]), sections)]
    rep = run(container.unpack, seeds, n, (ContainerError,), seed=seed, reseal=_reseal)
    rep["wrong"] = []  # the checksum covers every byte: an accepted input is one the writer could make
    return rep


def lossless_seeds() -> list[bytes]:
    """A JPEG, a PNG with every ancillary chunk kind, a palette PNG, a 16-bit PNG: compressed."""
    import io

    import numpy as np
    from PIL import Image, PngImagePlugin

    from archiver.testing.catalog import smooth_image
    from archiver.codecs.lossless import format as lossless

    def save(im, fmt, **kw):
        b = io.BytesIO()
        im.save(b, fmt, **kw)
        return b.getvalue()

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "hello")
    info.add_itxt("Description", "ünïcode", lang="de", tkey="Beschreibung", zip=True)
    info.add(b"gAMA", (45455).to_bytes(4, "big"))
    info.add(b"tIME", bytes([7, 233, 1, 2, 3, 4, 5]))
    graphic = Image.fromarray(smooth_image(2, (48, 32)) // 32 * 32)
    deep = Image.fromarray((np.arange(24 * 16, dtype=np.uint16).reshape(16, 24) * 97).astype(np.uint16))
    originals = [save(Image.fromarray(smooth_image(1, (48, 32))), "JPEG", quality=80),
                 save(graphic, "PNG", pnginfo=info, dpi=(300, 300)),
                 save(Image.fromarray(smooth_image(7, (24, 16))).convert("P"), "PNG"),
                 save(deep, "PNG")]
    return [lossless.compress(o)[0] for o in originals]


def fuzz_lossless(n: int, seed: int) -> dict:
    """``lossless.restore`` on ``n`` mutated .jxl files: only ArchiverError, and every accepted
    input gives back one of the originals (its bytes or its pixels + metadata), never another image."""
    import hashlib

    from archiver.errors import ArchiverError
    from archiver.codecs.lossless import format as lossless

    seeds = lossless_seeds()
    backs = [lossless.restore(s) for s in seeds]
    originals = {hashlib.sha256(b).hexdigest() for b in backs}
    digests = {lossless.content_digest(b) for b in backs if not lossless.is_jpeg(b)}
    wrong: list[str] = []

    def parse(data):
        back = lossless.restore(data)
        if hashlib.sha256(back).hexdigest() not in originals and lossless.content_digest(back) not in digests:
            wrong.append(data[:64].hex())

    rep = run(parse, seeds, n, (ArchiverError,), seed=seed)
    rep["wrong"] = wrong
    return rep


TARGETS = {"dlc": fuzz_dlc, "lossless": fuzz_lossless}
