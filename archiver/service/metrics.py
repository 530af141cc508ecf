"""Prometheus metrics of the service, on a private registry (tests can create several daemons).

Worker processes return outcomes to the parent, which alone updates the metrics, so no
multiprocess collector is needed.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.files = Counter("archiver_files", "Files handled, by outcome", ["outcome", "action"], registry=r)
        self.bytes_in = Counter("archiver_bytes_in", "Bytes of originals handled", registry=r)
        self.bytes_saved = Counter("archiver_bytes_saved", "Bytes saved (original minus stored)", registry=r)
        self.encode_seconds = Histogram(
            "archiver_encode_seconds", "Seconds per file in the unit of work", ["action"], registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.queue_depth = Gauge("archiver_queue_depth", "Work queue rows by state", ["state"], registry=r)
        self.settling = Gauge("archiver_settling_files", "Files waiting for their settle window", registry=r)
        self.in_flight = Gauge("archiver_in_flight", "Files being worked on now", registry=r)
        self.roots_paused = Gauge("archiver_roots_paused", "Configured roots paused (missing/unmounted)", registry=r)
        self.root_up = Gauge("archiver_root_available", "1 if the root is available", ["root"], registry=r)
        self.scans = Counter("archiver_reconcile_scans", "Reconciliation scans finished", registry=r)
        self.last_scan = Gauge("archiver_last_scan_timestamp_seconds", "When the last scan finished", registry=r)
        self.failures = Counter("archiver_worker_errors", "Unexpected errors around the unit of work", registry=r)

    def observe_outcome(self, outcome: dict) -> None:
        status = str(outcome.get("status") or outcome.get("outcome") or "unknown")
        action = str(outcome.get("action") or "none")
        self.files.labels(outcome=status, action=action).inc()
        before = outcome.get("bytes_before") or 0
        after = outcome.get("bytes_after")
        if before:
            self.bytes_in.inc(before)
        if before and after is not None and before > after:
            self.bytes_saved.inc(before - after)
        if outcome.get("seconds") is not None:
            self.encode_seconds.labels(action=action).observe(float(outcome["seconds"]))

    def serve(self, port: int, addr: str = "127.0.0.1"):
        """Start the /metrics HTTP endpoint; returns the server (or None when port is 0)."""
        if not port:
            return None
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server
