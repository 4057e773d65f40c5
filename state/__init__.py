"""Durable state of the service (Postgres source of truth, Redis cache)."""
