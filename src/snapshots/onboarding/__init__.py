"""Onboarding: connect a Stripe account in one step and keep the connection working.

`capabilities` (what a key may do), `endpoint` (the webhook endpoint Snapshots manages in
Stripe, following the flows), `health` (the connection check), `setup` (connect, repair,
remove: what the CLI, the API and the console call)."""
