"""Keep PySide6 from reading the source of every module imported after it.

PySide6 (6.11) hooks ``import``: for each newly imported module its ``__feature__``
support calls ``inspect.getsource(module)`` to see whether the module mentions
"PySide6" (``shibokensupport.feature._mod_uses_pyside``). Loading the engine in the
background (torch, astropy, scipy: ~2,000 modules) then costs ~0.5 s more CPU, with
the GIL held, than without Qt, which the window feels while the model loads
(measured: 3.34 s vs 2.80 s CPU for ``spemr_engine.api`` + catalog + astropy.table).

spemr never uses ``from __feature__ import ...`` (snake_case / true_property), so the
answer only matters for Qt-using modules; they are recognised by name instead.
Harmless when the private hook is absent (another PySide6 version).
"""

from __future__ import annotations

import sys

QT_USERS = ("PySide6", "shiboken6", "spemr_gui", "pyqtgraph", "pytestqt", "__main__")


def _uses_pyside_by_name(module) -> bool:
    return str(getattr(module, "__name__", "")).startswith(QT_USERS)


def skip_source_scan() -> bool:
    """Replace the source scan by a name check; True when the hook was found."""
    feature = sys.modules.get("shibokensupport.feature")
    if feature is None or not callable(getattr(feature, "_mod_uses_pyside", None)):
        return False
    feature._mod_uses_pyside = _uses_pyside_by_name
    return True
