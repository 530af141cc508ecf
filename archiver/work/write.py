"""Step 4, write: record the compressed file's name first (``write_intent``, so recovery knows
what to clean), then write it crash-safely beside the original (temp name, fsync, hard link that
never clobbers, fsync the directory) with the original's mode and owner (-> ``encoded``)."""

from __future__ import annotations

import hashlib

from ..catalog.models import CLASSIFIED, ENCODED
from . import faults, files
from .job import Job


class Write:
    name = "write"

    def __init__(self, ctx):
        self.ctx = ctx

    def run(self, job: Job, w) -> None:
        enc = job.encoded
        cp = files.sidecar_path(job.path, enc.ext, job.row.id)
        w.record(job, CLASSIFIED, kind="write_intent", compressed_path=str(cp), codec=enc.codec,
                 codec_version=enc.codec_version, action=job.action)
        faults.fault("write_intent")
        w.write_artifact(job, cp, enc.data)
        job.compressed_path = cp
        faults.fault("written")
        w.record(job, ENCODED, compressed_sha256=hashlib.sha256(enc.data).hexdigest(), compressed_size=len(enc.data),
                 bpp=enc.bpp, codec_params=enc.params, backbone=enc.backbone, backbone_digest=enc.backbone_digest)
        faults.fault("encoded")
