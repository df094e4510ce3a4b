"""Build hook: ship the repository's top-level `assets/` (default model, line list, samples,
emulator) inside the wheel as `spemr_engine/_assets/`, where `config.assets_dir()` finds it.

Everything else is declared in pyproject.toml. Editable installs (`pip install -e .`) copy
nothing: there `config.assets_dir()` falls back to the repository's `assets/`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ASSETS = Path(__file__).resolve().parent / "assets"
PACKAGED = Path("spemr_engine") / "_assets"


class build_py_with_assets(build_py):  # noqa: N801 (setuptools command naming)
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        if not ASSETS.is_dir():
            raise SystemExit(f"{ASSETS}: missing; the wheel must ship the default model and samples")
        target = Path(self.build_lib) / PACKAGED
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(ASSETS, target, ignore=shutil.ignore_patterns("__pycache__", ".*", "*.pyc"))


setup(cmdclass={"build_py": build_py_with_assets})
