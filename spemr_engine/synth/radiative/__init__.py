"""Radiative-transfer synthetic spectra: the grid they live on, how they are stored, the
Turbospectrum driver that makes them and the emulator that interpolates them."""
