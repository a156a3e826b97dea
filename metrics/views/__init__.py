"""HTTP views of metrics, one module per noun: ingest, series, batches, discovery, chart."""
