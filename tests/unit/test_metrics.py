"""observe_all: one update per bucket gives the series of one observe() per value."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agents.metrics import LATENCY_BUCKETS, observe_all


def series(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


@pytest.mark.parametrize(
    "values",
    [
        [],
        [0.0],
        [0.005, 0.01, 0.25, 60.0],  # on the bounds: counted in that bucket (le)
        [0.0051, 59.99, 60.01, 1e9],  # just above a bound, and past the last one
        [random.Random(7).expovariate(2.0) for _ in range(2_000)],
    ],
    ids=["none", "zero", "on bounds", "above bounds", "random"],
)
def test_observe_all_equals_one_observe_per_value(values: list[float]) -> None:
    one, many = CollectorRegistry(), CollectorRegistry()
    each = Histogram("lat", "h", buckets=LATENCY_BUCKETS, registry=one)
    batch = Histogram("lat", "h", buckets=LATENCY_BUCKETS, registry=many)
    for value in values:
        each.observe(value)
    observe_all(batch, list(values))

    expected, got = series(one), series(many)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    assert got[("lat_count", "")] == len(values)
