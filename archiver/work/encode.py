"""Step 3, encode: ask the action's codec for an artifact, in memory. No codec, a codec error,
or an artifact that is not smaller than the original -> fall back (diffusion -> lossless ->
keep), with the reason recorded."""

from __future__ import annotations

from .classify import fall_back
from .codec import Unavailable, codec_for
from .job import Job


class Encode:
    name = "encode"

    def __init__(self, ctx):
        self.ctx = ctx

    def run(self, job: Job, w) -> bool:
        """True with ``job.encoded`` set; False after falling back."""
        try:
            enc = codec_for(job.action, self.ctx).encode(job)
        except Unavailable as e:
            fall_back(job, w, str(e))
            return False
        if len(enc.data) >= len(job.data):
            what = "lossless version" if job.action == "lossless" else "diffusion output"
            fall_back(job, w, f"{what} not smaller ({len(enc.data)} >= {len(job.data)} bytes); original kept")
            return False
        job.encoded = enc
        return True
