"""Benchmarks for Snapshots: standalone scripts that print figures, never assertions."""
