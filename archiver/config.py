"""Configuration: one YAML file (see config.example.yaml), overridable per command.

Looked up in this order: ``--config FILE``, ``$ARCHIVER_CONFIG``, ``./archiver.yaml``,
``$XDG_CONFIG_HOME/archiver/config.yaml`` (default ``~/.config``), ``archiver/config.yaml`` in each
of ``$XDG_CONFIG_DIRS`` (default ``/etc/xdg``), ``/etc/archiver/config.yaml``; otherwise defaults.
A file named by ``--config`` or ``$ARCHIVER_CONFIG`` must exist. ``Config.source`` says which
file was read (None: defaults).
"""

from __future__ import annotations

import os
import typing
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
    #: daemon / migrate worker processes: a number, or "auto" (``auto_workers``: one per core, as
    #: many as 3/4 of the memory holds); after loading it is always a number
    workers: int | str = "auto"
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
    #: the web dashboard (``archiver serve``): host, port, token, with_daemon, bench_dir (see archiver/app/web/settings.py)
    web: dict = field(default_factory=dict)
    #: small standard previews beside archived files or in a mirror tree (see archiver/preview.py); None = off
    preview: dict | None = None

    def __post_init__(self):
        if self.workers == AUTO:
            self.workers = auto_workers()
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


AUTO = "auto"
#: the most memory one worker process holds (the tiny backbone, the face and text detectors, a
#: Kodak-size image's search; measured: about 1.1-1.3 GiB peak RSS), for ``auto_workers``
WORKER_BYTES = 3 << 29  # 1.5 GiB


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's or taskset's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def memory_for_workers() -> int | None:
    """Bytes the worker processes may hold together: three quarters of the machine's memory
    (``MemTotal``), or of the cgroup's limit when that is lower (a container); None where unknown.
    Total, not free, memory: the same answer on every reload of a daemon whose own workers hold
    some of it."""
    total = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and (total is None or int(raw) < total):
            total = int(raw)
    return None if total is None else total * 3 // 4


def auto_workers(cores: int | None = None, memory: int | None = None) -> int:
    """``workers: auto``: one worker process per usable core, but no more than ``memory`` (default
    ``memory_for_workers()``) holds at ``WORKER_BYTES`` each (at least 1)."""
    n = usable_cores() if cores is None else cores
    mem = memory_for_workers() if memory is None else memory
    if mem is not None:
        n = min(n, max(1, mem // WORKER_BYTES))
    return max(1, min(256, int(n)))


#: what a setting that takes more than one type must be, for its one error line
TYPE_HINTS = {"workers": f"must be a number from 1 to 256 or {AUTO!r}"}

#: numeric ranges (inclusive; None = open)
RANGES: dict[str, tuple[float | None, float | None]] = {
    "decode_steps": (0, 1000), "settle_seconds": (0, None), "rescan_seconds": (0, None), "workers": (1, 256),
    "metrics_port": (0, 65535), "retry_seconds": (0, None), "max_attempts": (1, None), "max_pixels": (1, None),
    "lease_seconds": (1, None), "min_free_bytes": (0, None),
}
#: settings that name directories (absolute; an existing path must be a directory, and at least its
#: parent must exist — a missing root itself is an unmounted one, paused by the daemon)
EXISTING_DIRS = ("roots", "poll_roots")
#: settings that name paths which must be absolute (created when missing)
ABSOLUTE_PATHS = ("vault_dir",)
DEVICES = ("auto", "cpu", "cuda", "mps")


def _schema_errors(data: dict[str, Any]) -> list[str]:
    """Every problem with ``data`` (types, ranges, paths), one line each, naming its key."""
    if not data:  # nothing set: the defaults (a command without a config file skips pydantic's import)
        return []
    from pydantic import ConfigDict, ValidationError, create_model  # heavy: pydantic, which config does not load at import

    hints = typing.get_type_hints(Config)
    schema = create_model("ConfigSchema", __config__=ConfigDict(strict=True, extra="forbid"),
                          **{f.name: (hints[f.name], None) for f in fields(Config)})
    errors: list[str] = []
    try:
        schema.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            if err["loc"][0] in TYPE_HINTS:  # a union: one line for the key, not one per member type
                line = f"{err['loc'][0]}: {TYPE_HINTS[err['loc'][0]]} (got {err.get('input')!r})"
                if line not in errors:
                    errors.append(line)
                continue
            key = ".".join(str(x) for x in err["loc"])
            what = {"list_type": "must be a list (write `- item` lines, even for one entry)"}.get(err["type"], err["msg"].lower())
            errors.append(f"{key}: {what} (got {err.get('input')!r})")
    bad = {e.split(":", 1)[0].split(".", 1)[0] for e in errors}
    for key, (lo, hi) in RANGES.items():
        v = data.get(key)
        if key in bad or v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            span = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            errors.append(f"{key}: must be {span} (got {v!r})")
    for key in EXISTING_DIRS:
        if key in bad or not isinstance(data.get(key), list):
            continue
        for i, d in enumerate(data[key]):
            if not isinstance(d, str):
                continue
            full = os.path.expanduser(d)
            if not os.path.isabs(full):
                errors.append(f"{key}[{i}]: must be an absolute path (got {d!r})")
            elif os.path.lexists(full) and not os.path.isdir(full):
                errors.append(f"{key}[{i}]: not a directory (got {d!r})")
            elif not os.path.isdir(os.path.dirname(full.rstrip(os.sep)) or os.sep):
                errors.append(f"{key}[{i}]: no such directory, nor its parent (got {d!r})")
            # a root that is missing itself (an unmounted mount point) is paused by the daemon's
            # root guard, never treated as empty: not a configuration error
    for key in ABSOLUTE_PATHS:
        v = data.get(key)
        if key not in bad and isinstance(v, str) and not os.path.isabs(os.path.expanduser(v)):
            errors.append(f"{key}: must be an absolute path (got {v!r})")
    w = data.get("workers")
    if "workers" not in bad and isinstance(w, str) and w != AUTO:
        errors.append(f"workers: {TYPE_HINTS['workers']} (got {w!r})")
    dev = data.get("device")
    if "device" not in bad and isinstance(dev, str) and dev.split(":", 1)[0] not in DEVICES:
        errors.append(f"device: must be one of {', '.join(DEVICES)} (or cuda:N) (got {dev!r})")
    return errors


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Read the config file (if any), apply non-None ``overrides`` and validate the result:
    ``UsageError`` (exit 2) with one line per problem, each naming its key."""
    named = path or os.environ.get("ARCHIVER_CONFIG") or None
    candidates = [Path(named)] if named else search_paths()
    data: dict[str, Any] = {}
    source: Path | None = None
    for c in candidates:
        if c.is_file():
            try:
                data = yaml.safe_load(c.read_text()) or {}
            except yaml.YAMLError as e:
                raise UsageError(f"{c}: invalid YAML: {' '.join(str(e).split())}") from None
            except (OSError, UnicodeDecodeError) as e:
                raise UsageError(f"{c}: cannot read the config ({e})") from None
            if not isinstance(data, dict):
                raise UsageError(f"{c}: the config must be a mapping of settings")
            source = c.absolute()
            break
        if named:
            raise UsageError(f"{c}: config file not found" + ("" if path else " (named by $ARCHIVER_CONFIG)"))
    known = {f.name for f in fields(Config)}
    unknown = sorted(str(k) for k in set(data) - known)
    if unknown:
        raise UsageError(f"{source}: unknown config setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    data.update({k: v for k, v in overrides.items() if v is not None})
    errors = _schema_errors(data)
    if errors:
        raise UsageError("\n".join(f"{source or 'settings'}: {e}" for e in errors))
    cfg = Config(**data)
    cfg.source = source
    return cfg
