from __future__ import annotations

from snapshots import flows


def test_prebuilt_flows_load_and_route() -> None:
    registry = flows.load()
    assert registry.wants("customer.updated")
    assert registry.wants("invoice.paid")
    assert not registry.wants("charge.succeeded")
