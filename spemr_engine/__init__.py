"""spemr_engine: the SPEMR method for LAMOST MRS spectra, without any GUI.

The public API that the CLI, the GUI and the tests call lives in ``spemr_engine.api``.
Heavy modules (torch) are imported only where needed so that reading and
preprocessing stay fast to start.
"""
__version__ = "0.1.0"
