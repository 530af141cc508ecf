"""Step 5, re-read and check: the compressed file is read back from disk, must hash to what was
written, and its codec must verify it against the original (-> ``verified``, with the quality,
the reconstruction's identity, how exact a restore will be, and what the codec learned from the
file read back, e.g. a lossy reconstruction's fingerprint, and a PNG original's text chunks, which
no lossy format carries: ``archiver.reconstruction``). The same codec's ``restore`` asks
the same question later (``invariant.replacement_holds``: before an original is removed, by
recovery, restore and verify). A refused file is deleted and the job moves on to the next codec."""

from __future__ import annotations

import hashlib

from ..catalog.models import VERIFIED
from ..codecs import Verdict
from ..codecs.base import metric_name
from ..reconstruction import PNG_CHUNKS_PARAM, kept_chunks
from . import faults
from .classify import fall_back
from .job import Job


class Check:
    name = "check"

    def __init__(self, ctx):
        self.ctx = ctx

    def run(self, job: Job, w) -> bool:
        cp = job.compressed_path
        disk = w.read_artifact(cp)
        if hashlib.sha256(disk).hexdigest() != job.row.compressed_sha256:
            verdict = Verdict(False, "the compressed file does not read back identically")
        else:
            verdict = job.codec.verify(disk, job.source, job.choice.target)
        job.choice.record(job.codec, job.encoded, verdict)
        if verdict.ok:
            job.quality = {"psnr": verdict.psnr, "ms_ssim": verdict.ms_ssim, "region_psnr": verdict.region_psnr,
                           "score": verdict.score, "region_score": verdict.region_score,
                           "reconstruction_sha256": verdict.reconstruction_sha256, "restore_exact": verdict.exact}
            job.reasons.append(job.choice.why_chosen(job.codec.name))
            kept = {PNG_CHUNKS_PARAM: kept_chunks(job.source.data)} if job.codec.lossy else {}
            kept = {k: v for k, v in kept.items() if v}  # a PNG's text chunks: no lossy format carries them
            params = {**verdict.params, **kept}
            extra = {"codec_params": {**job.encoded.params, **params}} if params else {}
            judged = {"score_metric": metric_name() if verdict.score is not None else None,
                      "target_score": job.choice.target.score if job.choice.target else None,
                      "candidates": job.choice.candidates_tried(job.codec.name)}
            w.record(job, VERIFIED, reasons=job.reasons, **job.quality, **extra, **judged)
            faults.fault("verified")
            return True
        w.discard_artifact(job, cp, job.row.compressed_sha256)
        job.compressed_path = None
        fall_back(job, w, f"{job.codec.name}: {verdict.why}", compressed_path=None, compressed_sha256=None,
                  compressed_size=None, bpp=None, codec=None, codec_version=None, codec_params=None)
        return False
