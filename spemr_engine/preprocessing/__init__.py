"""Preprocessing: rest frame, resampling, continuum, quality flags, radial velocity, the file-to-spectra pipeline."""
