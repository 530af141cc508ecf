"""Configuration: one YAML file (see config.example.yaml), overridable per command.

Looked up in this order: ``--config FILE``, ``$ARCHIVER_CONFIG``, ``./archiver.yaml``,
``$XDG_CONFIG_HOME/archiver/config.yaml`` (default ``~/.config``), ``archiver/config.yaml`` in each
of ``$XDG_CONFIG_DIRS`` (default ``/etc/xdg``), ``/etc/archiver/config.yaml``; otherwise defaults.
A file named by ``--config`` or ``$ARCHIVER_CONFIG`` must exist. ``Config.source`` says which
file was read (None: defaults).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import UsageError

def search_paths() -> list[Path]:
    """Where a config file is looked for when none is named (XDG Base Directory order)."""
    xdg_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    xdg_dirs = [d for d in (os.environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":") if d]
    return [Path("archiver.yaml"), Path(xdg_home) / "archiver" / "config.yaml",
            *(Path(d) / "archiver" / "config.yaml" for d in xdg_dirs), Path("/etc/archiver/config.yaml")]


def default_state_dir() -> Path:
    base = os.environ.get("ARCHIVER_HOME")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_DATA_HOME")
    return Path(xdg) / "archiver" if xdg else Path.home() / ".local" / "share" / "archiver"


@dataclass
class Config:
    #: SQLAlchemy URL of the catalog; default a SQLite file in the state directory
    catalog_url: str | None = None
    #: where vaulted originals are kept (default: <state>/vault)
    vault_dir: str | None = None
    #: default policy file (default: the shipped policies/default.yaml)
    policy: str | None = None
    #: backbone name: "tiny" (embedded) or "diffusers"
    backbone: str = "tiny"
    #: for the diffusers backbone: a local directory in diffusers layout, or a repo id found in the HF cache
    diffusers_model: str | None = None
    #: adapter folder for that model (``archiver train adapter``): its trained entropy model and
    #: quantization steps. Files coded with it name it and decode only with it
    adapter: str | None = None
    #: torch device ("cpu", "cuda", "auto")
    device: str = "auto"
    #: DDIM steps at decode time
    decode_steps: int = 4
    #: daemon: directories to watch
    roots: list[str] = field(default_factory=list)
    #: daemon: roots on network mounts, watched by polling
    poll_roots: list[str] = field(default_factory=list)
    #: daemon: seconds a file's size and mtime must be stable before it is handled
    settle_seconds: float = 10.0
    #: daemon: seconds between reconciliation scans
    rescan_seconds: float = 3600.0
    #: daemon / migrate worker processes
    workers: int = 1
    #: daemon: Prometheus metrics port (0 = off)
    metrics_port: int = 0
    #: daemon: first retry delay after a failed file (doubles per attempt, at most 1 h)
    retry_seconds: float = 30.0
    #: daemon: attempts before a file's queue entry is marked failed
    max_attempts: int = 5
    #: migrate/daemon: refuse to start (and pause) with less free space than this on the state,
    #: vault or root filesystems (None: 1 GiB, at least 2% of the disk)
    min_free_bytes: int | None = None
    #: refuse images with more pixels than this (decompression bombs)
    max_pixels: int = 178_956_970
    #: shared catalog: this node's name in queue claims (default: the host name); unique per node
    node_name: str | None = None
    #: shared catalog: seconds after which a claim whose holder stopped renewing it (a dead node)
    #: is taken over by another node; live holders renew every lease_seconds / 4
    lease_seconds: float = 300.0
    #: the web dashboard (``archiver serve``): host, port, token, with_daemon, bench_dir (see archiver/web/settings.py)
    web: dict = field(default_factory=dict)
    #: small standard previews beside archived files or in a mirror tree (see archiver/preview.py); None = off
    preview: dict | None = None

    def __post_init__(self):
        if self.adapter is not None and not (isinstance(self.adapter, str) and self.adapter.strip()):
            raise UsageError("config setting adapter: must be the path of an adapter folder (or null)")
        if self.adapter is not None and self.backbone != "diffusers":
            raise UsageError(f"config setting adapter: is for backbone: diffusers (the backbone is {self.backbone!r})")

    #: the file these settings were read from (None: built-in defaults); set by load_config
    source = None

    @property
    def state_dir(self) -> Path:
        return default_state_dir()

    def resolved_catalog_url(self) -> str:
        if self.catalog_url:
            return self.catalog_url
        return f"sqlite:///{self.state_dir / 'catalog.sqlite'}"

    def resolved_vault_dir(self) -> Path:
        return Path(self.vault_dir) if self.vault_dir else self.state_dir / "vault"


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Read the config file (if any) and apply non-None ``overrides``."""
    named = path or os.environ.get("ARCHIVER_CONFIG") or None
    candidates = [Path(named)] if named else search_paths()
    data: dict[str, Any] = {}
    source: Path | None = None
    for c in candidates:
        if c.is_file():
            try:
                data = yaml.safe_load(c.read_text()) or {}
            except yaml.YAMLError as e:
                raise UsageError(f"{c}: invalid YAML: {e}") from None
            if not isinstance(data, dict):
                raise UsageError(f"{c}: the config must be a mapping of settings")
            source = c.absolute()
            break
        if named:
            raise UsageError(f"{c}: config file not found" + ("" if path else " (named by $ARCHIVER_CONFIG)"))
    known = {f.name for f in fields(Config)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(f"unknown config setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    data.update({k: v for k, v in overrides.items() if v is not None})
    cfg = Config(**data)
    cfg.source = source
    return cfg
