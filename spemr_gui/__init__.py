"""spemr_gui: PySide6 + pyqtgraph views and workers over spemr_engine.api."""
