"""Line data for the synthetic spectra (CSV/JSON, read through importlib.resources)."""
