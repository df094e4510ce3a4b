"""Spectral line markers from the engine's shipped line list (spemr_engine.preprocessing.rv), with
a choice of which markers get a text label so ~50 lines per arm stay readable."""

from __future__ import annotations

from spemr_engine.errors import SpemrError

# Fraction of an arm's span that labelled markers keep between them.
LABEL_SEPARATION = 0.03


def load_lines(path=None) -> tuple:
    """The engine's line list (species, wave_vac, depth...); none when it is absent,
    because the inspector must work without markers."""
    from spemr_engine.preprocessing.rv import load_line_list

    try:
        return load_line_list(path)
    except SpemrError:
        return ()


def labelled_lines(lines, low: float, high: float, min_gap: float = 0.0) -> set:
    """The lines (within [low, high]) that get a text label: deepest first, skipping
    any closer than LABEL_SEPARATION of the span (or min_gap, in wavelength, when
    larger: a label's width on a narrow plot) to an already labelled one."""
    inside = [line for line in lines if low <= line.wave_vac <= high]
    gap = max(LABEL_SEPARATION * (high - low), min_gap)
    chosen: list = []
    for line in sorted(inside, key=lambda l: -l.depth):
        if all(abs(line.wave_vac - other.wave_vac) >= gap for other in chosen):
            chosen.append(line)
    return set(chosen)
