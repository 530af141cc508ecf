"""The background service and bulk migration (docs/operations.md).

daemon (the loop), watcher + settle (noticing finished files), roots (missing/unmounted roots
pause, never look deleted), queue (persistent, in the catalog), workers (the pure task
``run_task`` and its pools), migrate, lock, metrics, logs, notify (systemd), cli.
"""
