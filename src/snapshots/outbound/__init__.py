"""Outbound workflows: webhook endpoints, deliveries, waits, and the SSRF guard."""
