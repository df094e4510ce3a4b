"""spemr_engine: the SPEMR method for LAMOST MRS spectra, without any GUI.

The public API that the CLI, the GUI and the tests call lives in ``spemr_engine.api``.
Heavy modules (torch) are imported only where needed so that reading and
preprocessing stay fast to start.
"""

import os as _os

# Torch's OpenMP threads spin while they wait by default. Sharing cores with the
# catalog's worker processes or other jobs, that spinning made inference 2-8x slower
# (benchmarks/catalog.py); passive waiting cost about 10 % on an idle machine. It must be
# set before torch loads its OpenMP runtime; a user's own setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
