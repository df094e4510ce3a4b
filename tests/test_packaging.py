"""Import contract and asset lookup.

- `spemr_engine` never imports Qt (nor the GUI package): Dask workers and scripts use it
  without a display or PySide6.
- Reading and preprocessing (`spemr info`, `lamost`, `preprocess`, `rv`) never import torch.
- `config.assets_dir()`: SPEMR_ASSETS, else the assets packaged in an installed wheel, else
  the repository's `assets/` (the wheel itself is checked end to end in `.ci/run`).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from spemr_engine import config

ENGINE = Path(config.__file__).resolve().parent
QT_MODULES = ("PySide6", "PySide2", "PyQt5", "PyQt6", "shiboken6", "pyqtgraph", "spemr_gui")
SAMPLE = sorted((config.repo_root() / "assets" / "samples").glob("med-*.fits*"))[0]


def _loaded_after(code: str) -> list[str]:
    """Top-level package names in sys.modules after running code in a fresh interpreter."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=config.repo_root(), timeout=300
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_engine_source_never_imports_qt():
    """Every import statement in spemr_engine, including ones inside functions."""
    offenders = []
    for path in sorted(ENGINE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [
                f"{path.relative_to(ENGINE.parent)}:{node.lineno} {name}"
                for name in names
                if name.split(".")[0] in QT_MODULES
            ]
    assert not offenders, offenders


def test_importing_every_engine_module_loads_no_qt():
    loaded = _loaded_after(
        "import importlib, pkgutil, spemr_engine\n"
        "for m in pkgutil.walk_packages(spemr_engine.__path__, 'spemr_engine.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
    )
    assert "spemr_engine" in loaded
    assert not set(loaded) & set(QT_MODULES)


def test_spemr_info_never_imports_torch():
    loaded = _loaded_after(
        "import contextlib, io\n"
        "from spemr_engine import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert cli.main(['info', {str(SAMPLE)!r}]) == 0\n"
    )
    assert "spemr_engine" in loaded
    assert "torch" not in loaded
    assert not set(loaded) & set(QT_MODULES)


def test_reading_and_preprocessing_never_import_torch():
    loaded = _loaded_after(
        "import spemr_engine.reading.lamost, spemr_engine.preprocessing.preprocess, spemr_engine.preprocessing.rv"
    )
    assert "torch" not in loaded


def test_assets_dir_order(monkeypatch, tmp_path):
    monkeypatch.delenv("SPEMR_ASSETS", raising=False)
    monkeypatch.setattr(config, "packaged_assets_dir", lambda: None)
    assert config.assets_dir() == config.repo_root() / "assets"
    monkeypatch.setattr(config, "packaged_assets_dir", lambda: tmp_path / "packaged")
    assert config.assets_dir() == tmp_path / "packaged"
    monkeypatch.setenv("SPEMR_ASSETS", str(tmp_path / "mine"))
    assert config.assets_dir() == tmp_path / "mine"


def test_no_packaged_assets_in_a_source_checkout():
    """setup.py copies assets/ into the built wheel only: a copy in the source tree would
    shadow the repository's assets/ and go stale."""
    if config.packaged_assets_dir() is not None:
        pytest.skip("running from an installed wheel")
    assert not (ENGINE / "_assets").exists()
