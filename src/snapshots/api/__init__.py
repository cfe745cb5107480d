"""The HTTP surface: Stripe webhooks and the Snapshots REST API."""
