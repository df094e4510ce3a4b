"""The engine calls the GUI's background tasks make, in one place (Qt-free).

These are thin: the reading, preprocessing, inference and batch logic all live in
spemr_engine; this module only picks the arguments the GUI's state implies, so the
app shows exactly what the CLI would produce for the same input.
"""
from __future__ import annotations

from pathlib import Path

from .state import OpenFile, PairResult


def read_file(path: str | Path) -> OpenFile:
    """Read an MRS file (raises InputFileError with a one-line reason)."""
    from spemr_engine.lamost import read_mrs

    path = Path(path)
    return OpenFile(path=path, mrs=read_mrs(path))


def load_model(path: str | Path | None = None):
    """(bundle, path) of the given or the default model; raises ModelBundleError."""
    from spemr_engine import api

    resolved = Path(path) if path else api.default_model_path()
    return api.load_model(resolved), str(resolved)


def default_model_exists() -> bool:
    try:
        from spemr_engine import api
    except ImportError:  # engine API not installed yet: no model to load
        return False
    return Path(api.default_model_path()).exists()


def prepare_pair(opened: OpenFile, pair_index: int, model=None, rv: float | None = None):
    """The normalised model input of one arm pair (no inference): what the engine's
    analyse_file feeds the network, with the model's rest-frame mean as RV template
    when a model is active."""
    from spemr_engine.preprocess import preprocess_pairs

    template = None
    if model is not None:
        template = (model.grid.wave, model.flux_mean)
    return preprocess_pairs([opened.pairs[pair_index]], rv=rv, rv_template=template)


def infer_pair(opened: OpenFile, pair_index: int, model, model_key: str,
               rv: float | None = None, device: str = "auto") -> PairResult:
    """Fused SPEMR for one arm pair through the engine's high-level API."""
    from spemr_engine import api

    exposure = opened.exposure_of(pair_index)
    analysis = api.analyse_file(opened.path, model=model, exposure=exposure, rv=rv, device=device)
    return PairResult(spectra=analysis.spectra, prediction=analysis.prediction,
                      model_key=model_key, device=device)
