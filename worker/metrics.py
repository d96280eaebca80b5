"""The worker's own figures, on its `--metrics-port`: rotations in flight, how long SSH connects,
logins and commands take, and how commands ended (by status and error code). Updating one is a
lock and an addition, cheap enough for the rotation path. Labels come from the worker's own
vocabulary (platforms of the registry, its error codes), never from what a host prints."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
ROTATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

IN_FLIGHT = Gauge("keyturn_worker_in_flight", "Commands this worker is carrying out now.")
IN_FLIGHT_LIMIT = Gauge("keyturn_worker_in_flight_limit",
                        "Commands this worker lets be in flight at once now (it follows how long "
                        "they take, up to KEYTURN_WORKER_THREADS).")
SSH_SECONDS = Histogram("keyturn_worker_ssh_seconds",
                        "Seconds of one SSH step: connect (TCP and handshake, host key "
                        "checked), auth (one login), command (one remote command).",
                        ["step"], buckets=SSH_BUCKETS)
RESULTS = Counter("keyturn_worker_results_total",
                  "Commands this worker ended, by platform, action, status and error code "
                  "(empty on success).", ["platform", "action", "status", "code"])
ROTATION_SECONDS = Histogram("keyturn_worker_rotation_seconds",
                             "Seconds from a command's start to its result, in this worker.",
                             ["platform", "action"], buckets=ROTATION_BUCKETS)
SSH_STEPS = {step: SSH_SECONDS.labels(step) for step in ("connect", "auth", "command")}


def count_result(platform: str, action: str, status: str, code: str | None,
                 seconds: float) -> None:
    RESULTS.labels(platform, action, status, code or "").inc()
    ROTATION_SECONDS.labels(platform, action).observe(seconds)
