"""The one atomic writer and the one plain-JSON converter (spemr_engine.io_utils)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from spemr_engine import io_utils
from spemr_engine.io_utils import atomic_path, atomic_write, atomic_write_json, atomic_write_text, plain


def test_atomic_write_replaces_the_file_and_fsyncs_file_and_folder(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    target.write_text("old")
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}") if Path("/proc/self/fd").exists() else fd)
        real_fsync(fd)

    monkeypatch.setattr(io_utils.os, "fsync", fsync)
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert os.listdir(tmp_path) == ["out.json"]
    if Path("/proc/self/fd").exists():
        assert str(tmp_path) in synced  # the folder, after the rename
        assert any(str(p).startswith(str(tmp_path / ".out.json.tmp-")) for p in synced)  # the file


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def half(handle):
        handle.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, half, binary=True)
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target, suffix=".part") as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]


def test_atomic_path_with_a_known_suffix(tmp_path):
    with atomic_path(tmp_path / "a.npz", suffix=".part") as tmp:
        assert tmp == tmp_path / "a.npz.part"
        with open(tmp, "wb") as handle:
            np.savez(handle, x=np.arange(3))
    assert np.load(tmp_path / "a.npz")["x"].tolist() == [0, 1, 2]


def test_plain_makes_strict_json_and_keeps_nan_for_other_processes(tmp_path):
    value = {
        1: np.float32(1.5),
        "a": (np.int64(2), np.bool_(True)),
        "nan": float("nan"),
        "inf": np.float64(np.inf),
        "arr": np.array([[1.0, np.nan]]),
        "path": Path("x/y"),
        "none": None,
        "s": "t",
    }
    out = plain(value)
    assert out == {
        "1": 1.5,
        "a": [2, True],
        "nan": None,
        "inf": None,
        "arr": [[1.0, None]],
        "path": "x/y",
        "none": None,
        "s": "t",
    }
    json.dumps(out, allow_nan=False)
    loose = plain({"nan": np.float64(np.nan), "obj": object, "arr": np.array([np.nan])}, for_json=False)
    assert math.isnan(loose["nan"]) and math.isnan(loose["arr"][0]) and loose["obj"] == str(object)
    atomic_write_json(tmp_path / "p.json", value)
    assert json.loads((tmp_path / "p.json").read_text())["nan"] is None
