"""Request and response shapes of the metrics endpoints, one module per noun, for DRF and the
OpenAPI schema: `ingest` (the bodies of points written), `query` (a series query's string and
answer), `batches` (a queued batch's acceptance and status), `discovery` (the lists).
"""
