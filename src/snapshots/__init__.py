"""Snapshots: keep a CRM's locations, contacts and invoices in step with a Stripe account."""

__version__ = "0.1.0"
