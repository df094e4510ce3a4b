"""Error types: every user-facing failure is one line that names the file and the problem."""

from __future__ import annotations

import os
import re
from pathlib import Path

# C0 and C1 control characters, DEL, and lone surrogates (undecodable bytes of a file
# name that Python keeps as U+DC80-U+DCFF): none may reach a terminal or a log raw.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape_char(match: re.Match) -> str:
    char = match.group()
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the original byte
        return f"\\x{code - 0xDC00:02x}"
    if code > 0xFFFF or 0xD800 <= code <= 0xDFFF:
        return f"\\u{code:04x}"
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char, f"\\x{code:02x}")


def one_line(text: str) -> str:
    """``text`` with newlines, escape sequences (ANSI codes) and undecodable bytes written
    as backslash escapes: one printable line, safe for a terminal, a CSV cell or a log."""
    return _UNPRINTABLE.sub(_escape_char, str(text))


def display_name(path: str | os.PathLike) -> str:
    """A file's name for a message: its last component, escaped with :func:`one_line`."""
    return one_line(Path(os.fspath(path)).name or os.fspath(path))


class SpemrError(Exception):
    """Base class for errors the CLI and GUI show to users as one line."""


class InputFileError(SpemrError):
    """A file that cannot be used as input: its message starts with the file name."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = one_line(problem)
        super().__init__(f"{display_name(self.path)}: {self.problem}")


class ModelBundleError(SpemrError):
    """A model bundle or weights file that cannot be loaded."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = one_line(problem)
        super().__init__(f"{one_line(self.path)}: {self.problem}")


def require_regular_file(path: str | os.PathLike, what: str = "file") -> None:
    """Raise InputFileError unless ``path`` is a regular file: opening a FIFO blocks
    forever and a device (a symlink to /dev/zero) never ends."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputFileError(path, f"{what} not found") from None
    except (OSError, ValueError) as error:
        raise InputFileError(path, f"cannot be read ({getattr(error, 'strerror', None) or error})") from None
    if stat.S_ISDIR(mode):
        raise InputFileError(path, f"is a folder, not a {what}")
    if not stat.S_ISREG(mode):
        raise InputFileError(path, "is not a regular file (a FIFO, device or socket); refusing to read it")


class Cancelled(SpemrError):
    """Raised inside long jobs when the caller asked them to stop."""
