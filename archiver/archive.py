"""Moved to ``archiver.work`` (2026-11-26). This alias lets branches written against the old
module keep importing for a short while; it will be removed. Import from ``archiver.work``."""

from .work import *  # noqa: F401,F403
from .work import __all__  # noqa: F401
