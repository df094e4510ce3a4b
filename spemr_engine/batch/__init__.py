"""Batch: survey-scale catalogs (rows, chunk store, Dask), reports and isochrones."""
