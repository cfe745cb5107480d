"""`metrics.observe`: many timings written at once give what observing each one gives."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from snapshots import metrics


def samples(histogram: Histogram, registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name.startswith(histogram._name)
    }


@pytest.mark.parametrize(
    "amounts",
    [
        pytest.param([0.003], id="one"),
        pytest.param([0.0004, 0.001, 0.001, 0.0011, 0.02, 0.02, 7.5, 99.0], id="bounds-and-beyond"),
        pytest.param([0.004] * 50, id="one-bucket"),
        pytest.param([0.0, -1.0, 0.25, 2.5, 10.0], id="zero-negative-and-edges"),
    ],
)
def test_observing_at_once_is_observing_each(amounts: list[float]) -> None:
    each, together = CollectorRegistry(), CollectorRegistry()
    one = Histogram("t", "t", ["route"], buckets=metrics.LATENCY, registry=each)
    other = Histogram("t", "t", ["route"], buckets=metrics.LATENCY, registry=together)
    for amount in amounts:
        one.labels("r").observe(amount)
    metrics.observe(other.labels("r"), amounts)
    assert samples(other, together) == pytest.approx(samples(one, each))
