"""Idempotent retries over HTTP: one outcome per (API key, Idempotency-Key), replayed for 24 h."""
