"""``/metrics`` in the Prometheus text format (prometheus_client).

Farm-wide figures come from the store at scrape time, so every app server of a
farm reports the same values (take any one, or ``max``): sessions active,
ended and refused in the last 24 hours (the report's own figures), and the
sweeper's lag. What one process does is counted in that process (sum over
instances): refused requests, and the duration of its in-process sweeps.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from .decision import REFUSAL_REASONS
from .throttle import CHECKS, WAITING_SCOPES

PREFIX = "session_expiry"


class StoreCollector:
    """Reads the store's summary when Prometheus scrapes."""

    def __init__(self, store, clock):
        self.store = store
        self.clock = clock

    def collect(self):
        summary = self.store.summary(int(self.clock()))
        yield GaugeMetricFamily(f"{PREFIX}_sessions_active",
                                "Open sessions before their deadline.", value=summary.active)
        yield GaugeMetricFamily(f"{PREFIX}_sessions_started_24h",
                                "Sessions started in the last 24 hours.", value=summary.started)
        yield _by_reason(f"{PREFIX}_sessions_ended_24h",
                         "Sessions ended in the last 24 hours, by reason.",
                         summary.ended_by_reason)
        yield _by_reason(f"{PREFIX}_requests_refused_24h",
                         "Requests refused without a live session in the last 24 hours, by "
                         "reason (all app servers).", summary.refused_by_reason)
        yield GaugeMetricFamily(
            f"{PREFIX}_sweeper_lag_seconds",
            "Age of the oldest open session past its deadline: how late end events are.",
            value=summary.sweeper_lag)


def _by_reason(name: str, documentation: str, counts: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["reason"])
    for reason, count in sorted(counts.items()):
        family.add_metric([reason], count)
    return family


class Metrics:
    """One app's metrics, in a registry of its own (two apps in a process never mix)."""

    def __init__(self, store, clock):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StoreCollector(store, clock))
        self.refused = Counter(f"{PREFIX}_requests_refused",
                               "Requests refused without a live session, by reason "
                               "(this process).", ["reason"], registry=self.registry)
        for reason in REFUSAL_REASONS:
            self.refused.labels(str(reason))  # every reason shows, zero included
        self.throttled = Counter(f"{PREFIX}_password_checks_throttled",
                                 "Password checks refused before they were made (429), by "
                                 "check (sign_in, reauth) and by what had to wait (account, "
                                 "address) (this process).", ["check", "scope"],
                                 registry=self.registry)
        self.password_failures = Counter(f"{PREFIX}_password_failures",
                                         "Wrong passwords, by check (sign_in, reauth) (this "
                                         "process).", ["check"], registry=self.registry)
        for check in CHECKS:
            self.password_failures.labels(check)
            for scope in WAITING_SCOPES:
                self.throttled.labels(check, scope)
        self.sweep_duration = Histogram(
            f"{PREFIX}_sweep_duration_seconds", "Duration of this process's sweeps.",
            buckets=(.01, .05, .1, .5, 1, 5, 10, 30, 60), registry=self.registry)

    def count_throttled(self, check: str, scope: str) -> None:
        self.throttled.labels(check, scope).inc()

    def count_password_failure(self, check: str) -> None:
        self.password_failures.labels(check).inc()

    def count_refusal(self, reason: str) -> None:
        self.refused.labels(str(reason)).inc()

    def observe_sweep(self, result) -> None:
        self.sweep_duration.observe(result.seconds)
