"""Thin Qt views over the Qt-free state (spemr_gui.state)."""
