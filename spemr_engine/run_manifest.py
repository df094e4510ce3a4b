"""The settings a resumable run was started with, and the one way to compare them.

A resumable job (the batch catalog, the cross-match, training, a reference set being
written) keeps a JSON record beside its partial results. A rerun may continue only when
everything that decides the result is the same; otherwise it must say, in one line, what
differs and how to start over, rather than mix two runs or refuse without a reason.

    RunManifest(path, settings, section=None)
        .read() -> dict | None            the record on disk (None: no run started)
        .changes(record) -> list | None   None: nothing recorded; []: same settings;
                                          else the names of the settings that differ
        .require_same(what, remedy)       SpemrError "<what> was started with other
                                          settings (<names>); <remedy>" when they differ
        .record(**state) -> dict          the settings with the run's state, to keep
        .write(**state)                   that record, atomically (io_utils)
    fingerprint(settings) -> str          sha256 of the settings (the catalog's run id)

Where the settings sit in the record: with ``section=None`` they are top-level keys,
beside any state the run keeps there (crossmatch's build_params.json, training's
.checkpoints/run.json, a reference set's progress.json); with a section name they are
that key's value (the catalog's run.json, whose top level has its own ``model`` and
``exposures``). Only the settings' own keys are compared: a recorded key no setting
names any more cannot change the result. Records written before there was a section
(catalogs of earlier versions, which kept only the fingerprint) are compared by
fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from .errors import SpemrError
from .io_utils import atomic_write_json, plain

FINGERPRINT = "fingerprint"


def fingerprint(settings: Mapping[str, Any]) -> str:
    """Stable hash of a run's settings (what changes its result)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class RunManifest:
    """A resumable run's settings and the JSON file that records them (see module doc)."""

    def __init__(self, path: str | Path, settings: Mapping[str, Any], section: str | None = None):
        self.path = Path(path)
        self.section = section
        # as JSON will give them back (tuples as lists, paths as strings), so that a
        # record compares equal to the settings that wrote it
        self.settings: dict[str, Any] = json.loads(json.dumps(plain(dict(settings))))
        self.fingerprint = fingerprint(settings)

    def read(self) -> dict | None:
        """The record on disk; None when there is none. An unreadable record is one
        SpemrError line (a crash cannot leave a partial one: it is written atomically)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as error:
            raise SpemrError(f"{self.path}: cannot read the run record ({error.strerror or error})") from None
        try:
            record = json.loads(text)
        except ValueError as error:
            raise SpemrError(f"{self.path}: unreadable run record ({error})") from None
        if not isinstance(record, dict):
            raise SpemrError(f"{self.path}: unreadable run record (not a JSON object)")
        return record

    def changes(self, record: Mapping[str, Any] | None) -> list[str] | None:
        """None when nothing is recorded, [] when the record has these settings, else the
        names of the settings that differ."""
        if record is None:
            return None
        recorded = record if self.section is None else record.get(self.section)
        if not isinstance(recorded, Mapping):  # an earlier version's record: its fingerprint only
            same = record.get(FINGERPRINT) == self.fingerprint
            return [] if same else ["settings not recorded by the earlier run"]
        return _differences(recorded, self.settings)

    def require_same(self, what: str, remedy: str, record: Mapping[str, Any] | None = None) -> None:
        """Raise SpemrError when the run on disk was started with other settings (one line
        naming them); nothing recorded passes (a new run)."""
        changed = self.changes(record if record is not None else self.read())
        if changed:
            raise SpemrError(f"{what} was started with other settings ({', '.join(changed)}); {remedy}")

    def record(self, **state: Any) -> dict:
        """The record to keep: the run's ``state`` with the settings (and, in a section,
        the fingerprint)."""
        if self.section is None:
            return {**state, **self.settings}
        return {**state, self.section: self.settings, FINGERPRINT: self.fingerprint}

    def write(self, **state: Any) -> None:
        """Write :meth:`record` atomically (io_utils): the old record or the new, never half."""
        atomic_write_json(self.path, self.record(**state))


def _differences(recorded: Mapping[str, Any], settings: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Names of the settings whose recorded value differs, nested ones as "outer.inner"."""
    out = []
    for key, value in settings.items():
        old = recorded.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping) and old != value:
            out.extend(_differences(old, value, f"{prefix}{key}.") or [f"{prefix}{key}"])
        elif old != value:
            out.append(f"{prefix}{key}")
    return sorted(out)
