"""Isochrone overlays for the batch Kiel diagram: the reader lives in the engine
(``spemr_engine.batch.isochrones``) so that ``spemr report`` draws the same curves."""

from spemr_engine.batch.isochrones import LOG_TEFF_LIMIT, Isochrone, read_isochrones

__all__ = ["LOG_TEFF_LIMIT", "Isochrone", "read_isochrones"]
