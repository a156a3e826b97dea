"""Wire formats of other tools, turned into PointInputs for points_ingest."""
