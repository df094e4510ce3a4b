"""Catalog rows: per-file preparation in worker processes and batched labelling
(being written; see spemr_engine.catalog)."""
