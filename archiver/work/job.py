"""The job record: one file's unit of work, filled in step by step, and the outcome it ends in.

Every step reads what earlier steps put in the ``Job`` and adds its own part; nothing is passed
around besides it, so a step can be read (and tested) on its own.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..catalog.models import COMMITTED, ORIG_KEPT, ORIG_PRESENT, SKIPPED, FileVersion
from ..imageio import LoadedImage


class Skip(Exception):
    """Stop this file's work; the row ends in ``state`` (skipped, or failed) with the reason."""

    def __init__(self, reason: str, state: str = SKIPPED):
        super().__init__(reason)
        self.state = state


@dataclass
class Job:
    path: Path
    root: Optional[str] = None
    recovered: Optional[str] = None  # what recovery did for this path first
    # discover: the original as read, once
    data: bytes = b""
    st: Optional[os.stat_result] = None
    sha256: str = ""
    img: Optional[LoadedImage] = None
    tags: list[str] = field(default_factory=list)
    # the catalog row (a snapshot; the writers keep it current)
    row: Optional[FileVersion] = None
    # classify
    action: Optional[str] = None
    params: dict = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    disposition: Optional[str] = None
    regions: list[list[int]] = field(default_factory=list)
    fallback: Optional[str] = None
    # the codecs the decision allows, in order (codecs.choice.Choice), the original as they see
    # it (codecs.Source), the candidates still to try, and the one being tried
    choice: Any = None
    source: Any = None
    candidates: Any = None
    codec: Any = None
    # encode / write / check
    encoded: Any = None  # codecs.Encoded
    compressed_path: Optional[Path] = None
    quality: dict = field(default_factory=dict)
    # share: what decides the artifact, and the fields of the artifact shared with an exact copy
    content_key: Optional[str] = None
    shared: Optional[dict] = None
    shared_path: Optional[str] = None
    # vault
    vault_path: Optional[str] = None
    vault_expires_at: Optional[dt.datetime] = None

    @property
    def sp(self) -> str:
        return str(self.path)

    @property
    def pixels(self) -> int:
        return self.img.width * self.img.height if self.img is not None else 0


@dataclass
class ArchiveOutcome:
    path: str
    state: str  # committed | skipped | failed | dry-run | unchanged
    action: str | None = None
    rule: str | None = None
    reasons: list[str] = field(default_factory=list)
    file_id: int | None = None
    compressed_path: str | None = None
    size_before: int | None = None
    size_after: int | None = None
    bpp: float | None = None
    psnr: float | None = None
    ms_ssim: float | None = None
    #: the perceptual score (SSIMULACRA2) of the stored file and the rule's target
    score: float | None = None
    target: float | None = None
    disposition: str | None = None
    original_status: str | None = None
    fallback: str | None = None
    error: str | None = None
    recovered: str | None = None
    #: every codec tried for this file: codec, ok, why, size, bpp, psnr, ms_ssim, score, knob
    attempts: list[dict] = field(default_factory=list)
    #: the rule's retention for a vaulted original (dry run: what the vault will hold, and how long)
    retention_days: int | None = None
    #: an exact copy: the path whose stored file it shares (no artifact bytes of its own), and the
    #: key that decides sharing (the dry run finds copies among the files it plans with it)
    shares: str | None = None
    content_key: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of_row(cls, row: FileVersion, state: str | None = None, recovered: str | None = None) -> "ArchiveOutcome":
        after = None
        if row.state == COMMITTED:
            kept = row.original_status in (ORIG_KEPT, ORIG_PRESENT)
            after = (row.compressed_size or 0) + ((row.size or 0) if kept else 0)
        return cls(
            path=row.path, state=state or row.state, action=row.action, rule=row.rule, reasons=list(row.reasons or []),
            file_id=row.id, compressed_path=row.compressed_path, size_before=row.size, size_after=after, bpp=row.bpp,
            psnr=row.psnr, ms_ssim=row.ms_ssim, score=row.score, target=row.target_score,
            disposition=row.disposition, original_status=row.original_status,
            error=row.error, recovered=recovered, content_key=row.content_key)
