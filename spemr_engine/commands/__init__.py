"""Subcommands of the ``spemr`` CLI, one module each (see spemr_engine.cli)."""
