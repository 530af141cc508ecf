"""What every job of one run shares: the catalog, the policy, the vault, the codecs and
the limits, built once from a ``Config`` (per process in the service's workers)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..catalog.db import Catalog, open_catalog
from ..catalog.models import utcnow
from ..codecs.bound import Codecs
from ..imageio import DEFAULT_MAX_PIXELS
from ..preview import preview_settings
from ..storage.vault import Vault


@dataclass
class ArchiveContext:
    catalog: Catalog
    policy: Any  # archiver.policy.engine.Policy (anything with .decide)
    vault: Optional[Vault] = None
    codecs: Any = None  # codecs.bound.Codecs: the registry's codecs with this installation's settings
    dry_run: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    root: Optional[str] = None
    now: Callable[[], dt.datetime] = utcnow
    #: per-path locks (flock, striped) so two processes on this host never work on one file at once
    lock_dir: Optional[Path] = None
    #: previews for file browsers (archiver.preview.PreviewSettings); None = none written
    preview: Any = None

    @classmethod
    def from_config(cls, config, *, policy=None, catalog: Catalog | None = None, dry_run: bool = False) -> "ArchiveContext":
        """The context for ``config``; opens its catalog unless one is given, which must exist
        (the callers that may create it open it themselves, see ``catalog.db.Catalog``)."""
        from ..policy.engine import load_policy  # heavy: yaml (via policy.engine), which work.context does not load at import
        return cls(
            catalog=catalog or open_catalog(config),
            policy=policy if policy is not None and not isinstance(policy, (str, Path)) else load_policy(policy or config.policy),
            vault=Vault(config.resolved_vault_dir()),
            codecs=Codecs.from_config(config),
            dry_run=dry_run,
            max_pixels=config.max_pixels,
            lock_dir=config.state_dir / "locks",
            preview=preview_settings(config),
        )

    def __post_init__(self):
        if self.codecs is None:
            self.codecs = Codecs()
