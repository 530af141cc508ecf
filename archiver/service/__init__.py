"""The background service and bulk migration (docs/operations.md).

driver (the one claim -> submit -> renew -> take over -> collect loop), daemon and migrate (its two
users), messages (what crosses to a worker), workers (the task ``run_task`` and its pools), watcher
+ settle (noticing finished files), roots (missing/unmounted roots pause, never look deleted),
places (shared roots' markers), scan, lock (one daemon per catalog on a host), metrics, logs,
notify (systemd). The queue and the catalog's locks live in ``archiver.catalog``.
"""
