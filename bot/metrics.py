"""Prometheus metrics, one registry per application (nothing global at import)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The metrics Clarity exports at GET /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests_by_status = Gauge(
            "clarity_requests",
            "Feature requests by current status",
            ["status"],
            registry=self.registry,
        )
        self.requests_created = Counter(
            "clarity_requests_created",
            "Feature requests filed, by origin",
            ["origin"],
            registry=self.registry,
        )
        self.slack_calls = Counter(
            "clarity_slack_api_calls",
            "Slack Web API calls, by method and outcome",
            ["method", "outcome"],
            registry=self.registry,
        )
        self.github_calls = Counter(
            "clarity_github_api_calls",
            "GitHub API calls, by operation and outcome",
            ["operation", "outcome"],
            registry=self.registry,
        )
        self.errors = Counter(
            "clarity_errors",
            "Errors handled, by where they happened",
            ["where"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "clarity_http_request_duration_seconds",
            "HTTP request latency, by route and status",
            ["route", "status"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.jobs = Counter(
            "clarity_jobs",
            "Jobs run, by kind and outcome",
            ["kind", "outcome"],
            registry=self.registry,
        )
