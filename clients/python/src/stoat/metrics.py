"""A readable summary of the server's ``/metrics``: commit rate, latency
percentiles, subscribers. Pure functions over the OpenMetrics text."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

# (metric sample name, sorted label items) -> value
Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]

COMMIT_ROUTE = "commit"
QUANTILES = (0.5, 0.9, 0.99)


def parse(text: str) -> Samples:
    """Every sample of an OpenMetrics (or Prometheus text) exposition."""
    try:
        families = list(parse_openmetrics(text))
    except ValueError:
        families = list(parse_prometheus(text))
    samples: Samples = {}
    for family in families:
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples


def total(samples: Samples, name: str, **labels: str) -> Optional[float]:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    found = [
        value
        for (sample_name, sample_labels), value in samples.items()
        if sample_name == name and set(labels.items()) <= set(sample_labels)
    ]
    return sum(found) if found else None


def buckets(samples: Samples, name: str, **labels: str) -> List[Tuple[float, float]]:
    """A histogram's cumulative buckets as sorted ``(upper bound, count)`` pairs."""
    result = []
    for (sample_name, sample_labels), value in samples.items():
        label_map = dict(sample_labels)
        if sample_name != name + "_bucket" or any(label_map.get(k) != v for k, v in labels.items()):
            continue
        result.append((float(label_map["le"]), value))
    return sorted(result)


def quantile(q: float, cumulative: List[Tuple[float, float]]) -> Optional[float]:
    """Prometheus's ``histogram_quantile``: linear interpolation inside the bucket."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    rank = q * cumulative[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for upper_bound, count in cumulative:
        if count >= rank:
            if math.isinf(upper_bound):
                return lower_bound
            if count == lower_count:
                return upper_bound
            return lower_bound + (upper_bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = upper_bound, count
    return cumulative[-1][0]


def subtract(later: List[Tuple[float, float]], earlier: List[Tuple[float, float]]) -> List[Tuple[float, float]]:
    before = dict(earlier)
    return [(bound, count - before.get(bound, 0.0)) for bound, count in later]


@dataclass
class Summary:
    commits_by_outcome: Dict[str, float]
    commit_rate_per_second: Optional[float]
    commit_latency_seconds: Dict[str, Optional[float]]
    latency_window: str
    batch_transactions_mean: Optional[float]
    connections_open: Optional[float]
    queue_depth: Optional[float]
    subscribers: Optional[float]
    oldest_version: Optional[int]

    def as_json(self) -> Dict[str, object]:
        return {
            "commits_by_outcome": self.commits_by_outcome,
            "commit_rate_per_second": self.commit_rate_per_second,
            "commit_latency_seconds": self.commit_latency_seconds,
            "latency_window": self.latency_window,
            "batch_transactions_mean": self.batch_transactions_mean,
            "connections_open": self.connections_open,
            "queue_depth": self.queue_depth,
            "subscribers": self.subscribers,
            "oldest_version": self.oldest_version,
        }


def summarize(
    later: Samples, earlier: Optional[Samples] = None, seconds: float = 0.0, oldest_version: Optional[int] = None
) -> Summary:
    """Summarizes one scrape, or the interval between two scrapes ``seconds`` apart."""
    outcomes: Dict[str, float] = {}
    for (name, labels), value in later.items():
        if name == "stoat_commits_total":
            outcomes[dict(labels).get("outcome", "")] = value
    rate = None
    if earlier is not None and seconds > 0:
        committed_now = total(later, "stoat_commits_total", outcome="committed") or 0.0
        committed_before = total(earlier, "stoat_commits_total", outcome="committed") or 0.0
        rate = (committed_now - committed_before) / seconds
    latency = buckets(later, "stoat_http_request_duration_seconds", route=COMMIT_ROUTE)
    window = "since start"
    if earlier is not None:
        recent = subtract(latency, buckets(earlier, "stoat_http_request_duration_seconds", route=COMMIT_ROUTE))
        if recent and recent[-1][1] > 0:
            latency, window = recent, f"last {seconds:g} s"
    batch_sum = total(later, "stoat_batch_transactions_sum")
    batch_count = total(later, "stoat_batch_transactions_count")
    return Summary(
        commits_by_outcome=outcomes,
        commit_rate_per_second=rate,
        commit_latency_seconds={f"p{round(q * 100)}": quantile(q, latency) for q in QUANTILES},
        latency_window=window,
        batch_transactions_mean=batch_sum / batch_count if batch_sum is not None and batch_count else None,
        connections_open=total(later, "stoat_http_connections_open"),
        queue_depth=total(later, "stoat_pipeline_queue_depth"),
        subscribers=subscriber_count(later),
        oldest_version=oldest_version,
    )


def subscriber_count(samples: Samples) -> Optional[float]:
    """Open subscriptions: the ``stoat_subscribers`` gauge, when the server exports it."""
    return total(samples, "stoat_subscribers")
