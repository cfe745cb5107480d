from __future__ import annotations

from snapshots import flowfile


def test_prebuilt_flows_load_and_route() -> None:
    registry = flowfile.load()
    assert registry.wants("customer.updated")
    assert registry.wants("invoice.paid")
    assert not registry.wants("charge.succeeded")
