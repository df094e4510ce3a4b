"""The engine calls the GUI's background tasks make, in one place (Qt-free).

These are thin: the reading, preprocessing, inference and batch logic all live in
spemr_engine; this module only picks the arguments the GUI's state implies, so the
app shows exactly what the CLI would produce for the same input.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .state import OpenFile, PairResult


def warm_up() -> None:
    """Import the engine's heavy modules (astropy, scipy, torch) in a worker while the
    app starts: a first import can hold the interpreter for a few hundred ms, which
    would otherwise land in the middle of the user's first open or batch."""
    import spemr_engine.api  # noqa: F401  (reader, preprocessing, bundles, torch)
    import spemr_engine.batch.catalog  # noqa: F401
    import astropy.table  # noqa: F401  (reading catalogs back)


def read_file(path: str | Path) -> OpenFile:
    """Read an MRS file (raises InputFileError with a one-line reason)."""
    from spemr_engine.reading.lamost import read_mrs

    path = Path(path)
    mrs = read_mrs(path)
    return OpenFile(path=path, mrs=mrs, flux_unit=flux_unit(read_headers(path)))


def flux_unit(headers: list[tuple[str, str]]) -> str | None:
    """The flux unit a file states: TUNITn of a FLUX column, else BUNIT; None when it
    states none (LAMOST MRS files do not: their flux is relative)."""
    from astropy.io import fits

    bunit = None
    for _title, text in headers:
        header = fits.Header.fromstring(text, sep="\n")
        for i in range(1, int(header.get("TFIELDS", 0) or 0) + 1):
            if str(header.get(f"TTYPE{i}", "")).strip().upper() == "FLUX":
                unit = str(header.get(f"TUNIT{i}", "")).strip()
                if unit:
                    return unit
        bunit = bunit or (str(header.get("BUNIT", "")).strip() or None)
    return bunit


def load_model(path: str | Path | None = None, device: str | None = None):
    """(bundle, path) of the given or the default model; raises ModelBundleError.

    With a device, the model is also warmed up here (in the loading worker): its
    networks are built and one dummy spectrum is run through prediction and fit
    quality, so that the user's first inference costs what every later one does
    (~0.1 s instead of ~0.6 s on the 2-core machine)."""
    from spemr_engine import api

    resolved = Path(path) if path else api.default_model_path()
    bundle = api.load_model(resolved)
    if device is not None:
        warm_up_model(bundle, device)
    return bundle, str(resolved)


def warm_up_model(bundle, device: str = "auto") -> None:
    """Build the cached predictor and run one spectrum (the model's mean flux) through
    predict + fit quality. A failure here is not the user's: the real inference will
    report it, with the file it concerns."""
    from spemr_engine import api

    try:
        flux = np.asarray(bundle.flux_mean, dtype=np.float32)[None, :]
        api.predict_with_quality(bundle, flux, np.ones_like(flux), device=device, keep_model_flux=False)
    except Exception:  # noqa: BLE001  (reported by the first real inference instead)
        pass


def is_default_model(path) -> bool:
    """True when path is the engine's default model (saved as "" = follow the default)."""
    from spemr_engine import api  # already imported: a model was just loaded

    try:
        return Path(path).resolve() == Path(api.default_model_path()).resolve()
    except OSError:
        return False


def default_model_exists() -> bool:
    try:
        from spemr_engine import api
    except ImportError:  # engine API not installed yet: no model to load
        return False
    return Path(api.default_model_path()).exists()


def prepare_pair(opened: OpenFile, pair_index: int, model=None, rv: float | None = None):
    """The normalised model input of one arm pair (no inference), prepared exactly as
    the engine's analyse_file prepares it for this model (pipeline.Preparation: same RV
    template and grid)."""
    from spemr_engine.preprocessing.pipeline import Preparation

    preparation = Preparation() if model is None else Preparation.for_model(model)
    return preparation.preprocess([opened.pairs[pair_index]], rv=rv)


def infer_pair(
    opened: OpenFile, pair_index: int, model, model_key: str, rv: float | None = None, device: str = "auto"
) -> PairResult:
    """Fused SPEMR for one arm pair through the engine's high-level API, on what the app
    holds: the file already read and, when it is there, the pair already preprocessed for
    this model and RV (the state drops it when either changes), so nothing is read or
    preprocessed twice."""
    from spemr_engine import api

    held = opened.prepared.get(pair_index)
    if held is None:
        source = opened.mrs
    else:
        pair = opened.pairs[pair_index]
        source = api.PreparedInput(path=opened.path, mrs=opened.mrs, pairs=[pair], spectra=held, model=model)
    analysis = api.analyse_file(source, model=model, exposure=opened.exposure_of(pair_index), rv=rv, device=device)
    return PairResult(
        spectra=analysis.spectra, prediction=analysis.prediction, model_key=model_key, device=device, fit=analysis.fit
    )


# ------------------------------------------------------------------ templates
@dataclass
class TemplateMatches:
    """The k nearest library templates to one estimate, nearest first."""

    indices: list[int]
    labels: list[np.ndarray]  # each aligned with the prediction's labels
    spectra: list[tuple[np.ndarray, np.ndarray]]  # (wave, normalised flux) on the grid
    # The model spectrum at the fused labels (synth.model_spectra: what fit_chi2 measures
    # against), on the same grid; None when the fused Teff/log g/[Fe/H] are missing.
    model_flux: np.ndarray | None = None


@lru_cache(maxsize=2)
def _template_library(path: str):
    from spemr_engine.model.templates import TemplateLibrary

    return TemplateLibrary.load(path)


def find_templates(model, prediction, k: int = 10) -> TemplateMatches:
    """Nearest templates (standardised label space, paper section 3.5) from the
    model bundle's library; raises SpemrError when the bundle has none."""
    from spemr_engine.config import LABELS
    from spemr_engine.errors import SpemrError

    path = getattr(model, "template_library_path", None)
    if path is None:
        raise SpemrError(
            f"{getattr(model, 'path', 'model')}: this model bundle ships no template library (templates.npz)"
        )
    library = _template_library(str(path))
    estimate = _in_order(prediction.mean[0], prediction.labels, LABELS)
    indices = [int(i) for i in np.atleast_1d(library.nearest(estimate, k=k))]
    labels = [_in_order(np.asarray(library.labels(i), dtype=float), LABELS, prediction.labels) for i in indices]
    spectra = [tuple(np.asarray(a, dtype=np.float64) for a in library.spectrum(i)) for i in indices]
    return TemplateMatches(indices, labels, spectra, model_flux=fused_model_spectrum(prediction))


def fused_model_spectrum(prediction) -> np.ndarray | None:
    """The engine's model spectrum at the fused labels (first spectrum of ``prediction``)."""
    from spemr_engine.config import LABELS
    from spemr_engine.synth.model_spectra import model_spectra

    labels = _in_order(prediction.mean[0], prediction.labels, LABELS)
    flux = model_spectra(labels[None, :])[0]
    return flux if np.all(np.isfinite(flux)) else None


def _in_order(values, names_from, names_to) -> np.ndarray:
    """Re-order a label vector by name (NaN where a label is missing)."""
    lookup = dict(zip(names_from, np.asarray(values, dtype=float)))
    return np.array([lookup.get(name, np.nan) for name in names_to])


def read_headers(path: str | Path) -> list[tuple[str, str]]:
    """(HDU title, full header text: one 80-character card per line) of every HDU of
    a FITS file, read with the reader's bounds (regular file, size limits); data is
    never loaded. For the inspector's FITS header tab (runs in a worker)."""
    import io
    import warnings

    from astropy.io import fits

    from spemr_engine.errors import InputFileError
    from spemr_engine.reading.lamost import _read_bytes

    path = Path(path)
    raw = _read_bytes(path)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with fits.open(io.BytesIO(raw), memmap=False) as hdul:
                for index, hdu in enumerate(hdul):
                    header = hdu.header
                    name = str(header.get("EXTNAME", "PRIMARY" if index == 0 else "")).strip()
                    kind = "image" if index == 0 or header.get("XTENSION", "").strip() == "IMAGE" else "table"
                    title = f"{index}: {name or '(no EXTNAME)'} ({kind}, {len(header)} cards)"
                    cards = [str(card) for card in header.cards]
                    out.append((title, "\n".join(cards + ["END"])))
        except Exception as error:  # astropy's VerifyError, ValueError, ... on hostile headers
            raise InputFileError(path, f"cannot read its headers ({type(error).__name__}: {error})") from None
    return out
