"""Error types: every user-facing failure is one line that names the file and the problem."""
from __future__ import annotations

from pathlib import Path


class SpemrError(Exception):
    """Base class for errors the CLI and GUI show to users as one line."""


class InputFileError(SpemrError):
    """A file that cannot be used as input: its message starts with the file name."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{Path(self.path).name}: {problem}")


class ModelBundleError(SpemrError):
    """A model bundle or weights file that cannot be loaded."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class Cancelled(SpemrError):
    """Raised inside long jobs when the caller asked them to stop."""
