"""Serving: `predict` on new rows with the trained artifacts, and the staleness check that refuses artifacts
built from other params. The top layer: may import everything below it."""
