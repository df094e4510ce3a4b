"""Persistent user settings (QSettings): recent files, device, model, auto-inference.

Tests pass their own QSettings (an .ini file in tmp_path) so they never touch the
user's real settings; the app uses the platform default location.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings

DEVICES = ("auto", "cpu", "cuda")
MAX_RECENT = 10


class AppSettings:
    """Typed access to the few settings the app keeps between runs."""

    def __init__(self, qsettings: QSettings | None = None):
        self.q = qsettings or QSettings("spemr", "spemr-gui")

    # ------------------------------------------------------------- recent files
    def recent_files(self) -> list[str]:
        value = self.q.value("recent_files", [])
        if isinstance(value, str):  # QSettings returns a bare str for one item
            value = [value]
        return [str(v) for v in (value or [])]

    def add_recent(self, path: str | Path) -> None:
        path = str(Path(path).resolve())
        items = [p for p in self.recent_files() if p != path]
        self.q.setValue("recent_files", [path, *items][:MAX_RECENT])

    def clear_recent(self) -> None:
        self.q.setValue("recent_files", [])

    # ------------------------------------------------------------------- device
    @property
    def device(self) -> str:
        value = str(self.q.value("device", "auto"))
        return value if value in DEVICES else "auto"

    @device.setter
    def device(self, value: str) -> None:
        if value not in DEVICES:
            raise ValueError(f"unknown device {value!r} (choose from {', '.join(DEVICES)})")
        self.q.setValue("device", value)

    # ------------------------------------------------------------ auto inference
    @property
    def infer_on_open(self) -> bool:
        return _as_bool(self.q.value("infer_on_open", True))

    @infer_on_open.setter
    def infer_on_open(self, value: bool) -> None:
        self.q.setValue("infer_on_open", bool(value))

    # -------------------------------------------------------------------- model
    @property
    def model_path(self) -> str:
        """Empty string means: the engine's default model."""
        return str(self.q.value("model_path", "") or "")

    @model_path.setter
    def model_path(self, value: str | Path | None) -> None:
        self.q.setValue("model_path", str(value or ""))

    # -------------------------------------------------------------- last folder
    @property
    def last_dir(self) -> str:
        return str(self.q.value("last_dir", "") or "")

    @last_dir.setter
    def last_dir(self, value: str | Path) -> None:
        self.q.setValue("last_dir", str(value))

    def sync(self) -> None:
        self.q.sync()


def _as_bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
