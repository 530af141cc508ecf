"""Step 2b, share: an exact duplicate is stored once (issue 28). The file's ``content_key`` (its
SHA-256, rule, action, decision params and codec settings) names what its artifact would be; when
a committed row with that key has an artifact that, read back from disk now, still gives what
the catalog promises (``invariant.replacement_holds``), this file refers to it instead of
encoding and writing its own. Nothing is written in progress: the row names the shared artifact
only in the commit's transaction (``Commit``), so a crash before it leaves nothing to clean, and
a rollback can never take a file another row needs. The original is removed later through the
same gate as any other (dispose: the shared artifact is read back and checked again)."""

from __future__ import annotations

import dataclasses
import hashlib
import json

from . import faults
from .job import Job

#: the step boundaries an exact copy passes (``ARCHIVER_FAULT`` can kill it at each): no encode,
#: write or check; "shared" is reached once its artifact was found and read back
FAULT_STEPS = ("discovered", "classified", "shared", "vaulted", "committed", "taken", "removed")

#: what a sharing row copies from the row that wrote the artifact
SHARED_FIELDS = ("codec", "codec_version", "codec_params", "backbone", "backbone_digest", "compressed_path",
                 "compressed_sha256", "bpp", "reconstruction_sha256", "restore_exact", "psnr", "ms_ssim",
                 "region_psnr", "score", "region_score", "score_metric", "target_score", "candidates")


def content_key(job: Job, codec_settings) -> str:
    """What decides the artifact: the original's SHA-256, the rule, its action and params, the
    installation's codec settings."""
    settings = dataclasses.asdict(codec_settings) if dataclasses.is_dataclass(codec_settings) else {}
    what = {"sha256": job.sha256, "rule": job.row.rule, "action": job.action, "params": job.params,
            "codecs": settings}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


class Share:
    name = "share"

    def __init__(self, ctx):
        self.ctx = ctx

    def run(self, job: Job, w) -> bool:
        """True when the job shares a committed row's artifact (``job.shared`` set: the fields the
        commit records); False when it makes its own."""
        job.content_key = content_key(job, getattr(self.ctx.codecs, "settings", None))
        owner = w.shareable(job.content_key)
        if owner is None:
            return False
        fields = {k: getattr(owner, k) for k in SHARED_FIELDS}
        job.shared = {**fields, "artifact_of": owner.artifact_of or owner.id, "compressed_size": 0}
        job.shared_path = owner.path
        job.action = owner.action
        job.reasons.append(f"an exact copy of {owner.path}: shares its stored file {owner.compressed_path} "
                           "(read back and checked now); no new file written")
        faults.fault("shared")
        return True
