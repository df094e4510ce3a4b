"""Build a reference set from real LAMOST MRS files and a label catalog (paper 2.1):
sky cross-match, the paper's cuts, labels masked per label, incremental and resumable.

The work runs in three passes so that a large folder stays cheap and memory-flat:
1. scan: read only each file's primary header for its position;
2. match: nearest catalog star within the radius (astropy), with ambiguous cases found
   both ways (two catalog stars near one target, or one star nearest to two targets);
3. build: read, preprocess and cut the matched files one at a time, appending the kept
   spectra to the streaming reference-set writer.

Resuming: every processed file gets one line in ``build_log.jsonl`` (written and fsynced
*before* its spectra are appended), so a rerun skips what is done; if the last logged file
never reached the reference set, the line is dropped and the file redone. The summary is
computed from that log, so it is complete after any number of interruptions.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from astropy import units as u

from ..preprocessing import pipeline
from ..config import LABELS, default_regions, preprocess_config
from ..errors import Cancelled, InputFileError, SpemrError
from ..progress import BUILD, SCAN, Count, CountProgress
from ..io_utils import atomic_write_text
from ..reading.label_catalog import LabelCatalog, read_label_catalog
from ..reading.lamost import read_mrs_meta
from .refset import ReferenceSetWriter
from ..run_manifest import RunManifest

DEFAULT_MATCH_RADIUS = "3arcsec"
EXPOSURE_CHOICES = ("coadd", "all")
FITS_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fit.gz")
LOG_FILE = "build_log.jsonl"
PARAMS_FILE = "build_params.json"
SUMMARY_FILE = "build_summary.json"
# File outcomes, and the spectrum cuts in the order they are applied.
FILE_OUTCOMES = ("matched", "unreadable", "no_match", "ambiguous", "no_labels", "no_pairs")
SPECTRUM_CUTS = ("low_snr", "too_many_bad_pixels", "long_bad_run", "unreliable")
# cut -> its criterion in preprocess.QualityFlags, in the order they are tried
_CUT_CRITERIA = (("low_snr", "low_snr"), ("too_many_bad_pixels", "bad_pixels"), ("long_bad_run", "bad_run"))
KEPT = "kept"
MAX_LISTED = 50
# Positions closer than this are one LAMOST target (repeat visits share coordinates).
SAME_TARGET_DEG = 1e-6


# ---------------------------------------------------------------- options
@dataclass
class BuildOptions:
    match_radius_arcsec: float = 3.0
    min_snr: float | None = None  # None: the preprocessing preset's reject_min_snr
    exposures: str = "coadd"  # "coadd" | "all"
    catalog_format: str = "auto"
    mapping_file: str | None = None
    keep_ambiguous: bool = False  # take the nearest star even when ambiguous
    rv_catalog: str | None = None  # RVs by obsid/filename (else measured by CCF)

    def resolved_min_snr(self) -> float:
        return preprocess_config().reject_min_snr if self.min_snr is None else float(self.min_snr)

    def fingerprint(self, catalog_path: Path) -> dict:
        """What must not change between a build and its resumption."""
        data = asdict(self)
        data["min_snr"] = self.resolved_min_snr()
        data["catalog"] = str(Path(catalog_path).resolve())
        return data


def parse_radius(text: str | float) -> float:
    """'3arcsec', '0.5 arcmin', '3' (arcsec) -> arcsec."""
    try:
        quantity = u.Quantity(text)
        if quantity.unit == u.dimensionless_unscaled:
            quantity = quantity.value * u.arcsec
        value = float(quantity.to(u.arcsec).value)
    except (TypeError, ValueError, u.UnitsError) as error:
        raise SpemrError(f"match radius {text!r}: not an angle ({error})") from None
    if not value > 0:
        raise SpemrError(f"match radius {text!r}: must be positive")
    return value


def find_input_files(inputs: Iterable[str | Path]) -> list[Path]:
    """FITS files named directly or found (recursively) in the folders given, sorted."""
    found: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.update(p for p in path.rglob("*") if p.is_file() and _is_fits_name(p))
        elif path.is_file():
            found.add(path)
        else:
            raise InputFileError(path, "file or folder not found")
    if not found:
        raise SpemrError(f"no FITS files found in {', '.join(str(i) for i in inputs)}")
    return sorted(found)


def _is_fits_name(path: Path) -> bool:
    return path.name.lower().endswith(FITS_SUFFIXES)


# ---------------------------------------------------------------- matching
@dataclass
class SkyMatch:
    """Per input position: catalog index (-1 when none), separation, status, detail."""

    index: np.ndarray
    sep_arcsec: np.ndarray
    status: list[str]
    detail: list[str]


def match_positions(
    ra: np.ndarray, dec: np.ndarray, catalog: LabelCatalog, radius_arcsec: float, keep_ambiguous: bool = False
) -> SkyMatch:
    """Nearest catalog star within the radius for each position (NaN position: no match).

    Ambiguous: a second catalog star also lies within the radius, or the matched star is
    nearer to another LAMOST target. Ambiguous positions get no star unless
    ``keep_ambiguous``; either way the detail says what was found.
    """
    ra, dec = np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
    n = len(ra)
    index, sep = np.full(n, -1, dtype=np.int64), np.full(n, np.nan)
    status, detail = ["no_match"] * n, [""] * n
    valid = np.flatnonzero(np.isfinite(ra) & np.isfinite(dec))
    if len(catalog) == 0 or valid.size == 0:
        return SkyMatch(index, sep, status, detail)
    keys = np.round(np.column_stack([ra[valid], dec[valid]]) / SAME_TARGET_DEG)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    targets = np.column_stack([ra[valid][first], dec[valid][first]])
    t_index, t_sep, t_status, t_detail = _match_targets(targets, catalog, radius_arcsec, keep_ambiguous)
    for k, i in enumerate(valid):
        target = inverse[k]
        index[i], sep[i] = t_index[target], t_sep[target]
        status[i], detail[i] = t_status[target], t_detail[target]
    return SkyMatch(index, sep, status, detail)


def _match_targets(positions: np.ndarray, catalog: LabelCatalog, radius: float, keep: bool):
    from astropy.coordinates import SkyCoord  # slow to import; only needed here

    targets = SkyCoord(positions[:, 0] * u.deg, positions[:, 1] * u.deg)
    stars = SkyCoord(catalog.ra * u.deg, catalog.dec * u.deg)
    nearest, sep, _ = targets.match_to_catalog_sky(stars)
    sep = sep.to(u.arcsec).value
    within = sep <= radius
    n = len(positions)
    status = ["matched" if w else "no_match" for w in within]
    detail = [""] * n
    if len(catalog) > 1:
        second, sep2, _ = targets.match_to_catalog_sky(stars, nthneighbor=2)
        sep2 = sep2.to(u.arcsec).value
        for t in np.flatnonzero(within & (sep2 <= radius)):
            status[t] = "ambiguous"
            detail[t] = (
                f"2+ catalog stars within {radius:g} arcsec: {catalog.star_id[nearest[t]]} "
                f"at {sep[t]:.2f}, {catalog.star_id[second[t]]} at {sep2[t]:.2f}"
            )
    _mark_shared_stars(nearest, sep, within, catalog, status, detail)
    index = np.where(within, nearest, -1)
    if not keep:
        index = np.where([s == "matched" for s in status], index, -1)
    return index, sep, status, detail


def _mark_shared_stars(nearest, sep, within, catalog, status, detail) -> None:
    """A catalog star nearest to several LAMOST targets belongs to the closest one only."""
    matched = np.flatnonzero(within)
    stars, counts = np.unique(nearest[matched], return_counts=True)
    for star in stars[counts > 1]:
        sharing = matched[nearest[matched] == star]
        closest = sharing[np.argmin(sep[sharing])]
        for t in sharing[sharing != closest]:
            status[t] = "ambiguous"
            detail[t] = (
                f"catalog star {catalog.star_id[star]} ({sep[t]:.2f} arcsec) is nearer "
                f"to another LAMOST target ({sep[closest]:.2f} arcsec)"
            )


# -------------------------------------------------------------- build log
class BuildLog:
    """Append-only record of processed files (one JSON line each) in the output folder."""

    def __init__(self, folder: Path, params: dict, committed_spectra: int):
        self.path = folder / LOG_FILE
        self.entries: list[dict] = []
        self._check_params(folder / PARAMS_FILE, params)
        if self.path.exists():
            self.entries = [json.loads(line) for line in self.path.read_text().splitlines() if line]
            self._reconcile(committed_spectra)
        self.done = {entry["file"] for entry in self.entries}

    @staticmethod
    def _check_params(path: Path, params: dict) -> None:
        manifest = RunManifest(path, params)
        record = manifest.read()
        if record is None:
            manifest.write()
        else:
            manifest.require_same(
                f"{path.parent}: unfinished build", "rerun with those or use a new output folder", record
            )

    def _reconcile(self, committed: int) -> None:
        """Drop the last entry if its spectra never reached the reference set."""
        logged = sum(entry["kept"] for entry in self.entries)
        if logged > committed and self.entries and logged - self.entries[-1]["kept"] == committed:
            self.entries.pop()
            self._rewrite()
        elif logged != committed:
            raise SpemrError(
                f"{self.path}: log lists {logged} kept spectra but the reference set "
                f"holds {committed}; start a new output folder"
            )

    def _rewrite(self) -> None:
        atomic_write_text(self.path, "".join(json.dumps(e) + "\n" for e in self.entries))

    def append(self, entry: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.entries.append(entry)
        self.done.add(entry["file"])


# ------------------------------------------------------------------ build
@dataclass
class _FileResult:
    entry: dict
    flux: np.ndarray | None = None
    labels: np.ndarray | None = None
    rows: list[dict] = field(default_factory=list)


def build_reference_set(
    inputs: Sequence[str | Path],
    catalog_path: str | Path,
    out: str | Path,
    options: BuildOptions | None = None,
    progress: CountProgress | None = None,
    cancel: Callable[[], bool] | threading.Event | None = None,
) -> dict:
    """Cross-match the files with the catalog, cut, and write the reference set at ``out``.

    Returns the summary (also written to ``out/build_summary.json``). Raises Cancelled
    when ``cancel()`` turns true; running again with the same arguments resumes.
    """
    options = options or BuildOptions()
    if options.exposures not in EXPOSURE_CHOICES:
        raise SpemrError(f"exposures must be one of {', '.join(EXPOSURE_CHOICES)}, not {options.exposures!r}")
    files = find_input_files(inputs)
    catalog = read_label_catalog(catalog_path, options.catalog_format, options.mapping_file)
    rv_lookup = _rv_lookup(options.rv_catalog)
    out = Path(out)
    writer = ReferenceSetWriter(out, source=f"crossmatch:{catalog.mapping}:{catalog.path.name}")
    log = BuildLog(out, options.fingerprint(catalog.path), writer.n_spectra)
    scan = _scan(files, progress, cancel)
    match = match_positions(scan["ra"], scan["dec"], catalog, options.match_radius_arcsec, options.keep_ambiguous)
    # the default grid and line template (a reference set belongs to no model), with the build's S/N minimum
    preparation = pipeline.Preparation(config=replace(preprocess_config(), reject_min_snr=options.resolved_min_snr()))
    for i, path in enumerate(files):
        key = str(path.resolve())
        if key in log.done:
            continue
        if _stop_requested(cancel):
            raise Cancelled(f"build-refset cancelled after {len(log.done)} of {len(files)} files; run again to resume")
        result = _process_file(path, key, scan["error"][i], match, i, catalog, options, preparation, rv_lookup)
        log.append(result.entry)
        if result.rows and result.flux is not None and result.labels is not None:
            writer.append(result.flux, result.labels, result.rows)
        if progress:
            progress(Count(BUILD, done=i + 1, total=len(files), unit="files", kept=writer.n_spectra))
    summary = summarise(log.entries, catalog, options, files_now=len(files))
    atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=1))
    if writer.n_spectra == 0:
        raise SpemrError(f"{out}: no spectrum passed the match and the cuts ({_one_line(summary)}); see {SUMMARY_FILE}")
    writer.close()
    return summary


def _stop_requested(cancel) -> bool:
    """``cancel`` may be a callable or a threading.Event (as the GUI workers pass)."""
    if cancel is None:
        return False
    return bool(cancel.is_set() if hasattr(cancel, "is_set") else cancel())


def _rv_lookup(path: str | None):
    """The RV catalog, read once per build (errors before any file is processed)."""
    if path is None:
        return None
    from ..preprocessing.rv import load_rv_catalog  # only needed when an RV catalog is given

    return load_rv_catalog(path)


def _scan(files: list[Path], progress, cancel) -> dict:
    """Positions from the primary headers; unreadable files keep their error message."""
    ra, dec = np.full(len(files), np.nan), np.full(len(files), np.nan)
    errors: list[str | None] = [None] * len(files)
    for i, path in enumerate(files):
        if _stop_requested(cancel):
            raise Cancelled("build-refset cancelled while scanning headers")
        try:
            meta = read_mrs_meta(path)
            ra[i] = np.nan if meta["ra"] is None else meta["ra"]
            dec[i] = np.nan if meta["dec"] is None else meta["dec"]
            if not (np.isfinite(ra[i]) and np.isfinite(dec[i])):
                errors[i] = f"{path.name}: no RA/DEC in the primary header"
        except InputFileError as error:
            errors[i] = str(error)
        if progress and (i % 200 == 0 or i == len(files) - 1):
            progress(Count(SCAN, done=i + 1, total=len(files), unit="files"))
    return {"ra": ra, "dec": dec, "error": errors}


def _process_file(
    path: Path,
    key: str,
    scan_error: str | None,
    match: SkyMatch,
    i: int,
    catalog: LabelCatalog,
    options: BuildOptions,
    preparation: pipeline.Preparation,
    rv_lookup,
) -> _FileResult:
    entry: dict = {"file": key, "outcome": "", "detail": "", "star_id": None, "spectra": [], "kept": 0}
    star = int(match.index[i])
    if star >= 0:
        entry["star_id"] = str(catalog.star_id[star])
    if scan_error:
        return _FileResult({**entry, "outcome": "unreadable", "detail": scan_error})
    if star < 0:
        return _FileResult({**entry, "outcome": match.status[i], "detail": match.detail[i]})
    labels = catalog.labels[star]
    if np.all(np.isnan(labels)):
        return _FileResult({**entry, "outcome": "no_labels", "detail": "every label flagged or missing"})
    try:
        mrs = pipeline.read(path)
    except InputFileError as error:
        return _FileResult({**entry, "outcome": "unreadable", "detail": str(error)})
    try:
        pairs = pipeline.select_pairs(mrs, options.exposures)
    except InputFileError as error:
        return _FileResult({**entry, "outcome": "no_pairs", "detail": str(error)})
    entry["outcome"] = "matched"
    entry["detail"] = match.detail[i]  # non-empty when an ambiguous match was kept
    return _cut_and_collect(entry, mrs, pairs, labels, float(match.sep_arcsec[i]), preparation, rv_lookup)


def _cut_and_collect(
    entry: dict, mrs, pairs, labels: np.ndarray, sep: float, preparation: pipeline.Preparation, rv_lookup
) -> _FileResult:
    """Header S/N first (saves preprocessing hopeless spectra), then the grid-based cuts."""
    config = preparation.config
    results = ["low_snr" if _below(p.snr_blue, config) or _below(p.snr_red, config) else "" for p in pairs]
    whys = ["header S/N below the minimum" if r else "" for r in results]
    todo = [k for k, r in enumerate(results) if not r]
    kept_rows, kept_flux = [], []
    if todo:
        spectra = preparation.preprocess([pairs[k] for k in todo], rv=pipeline.file_rv(mrs.meta, rv_lookup))
        for j, k in enumerate(todo):
            results[k] = _classify(spectra.quality, j)
            whys[k] = "" if results[k] == KEPT else spectra.quality.reason[j]
            if results[k] == KEPT:
                kept_rows.append(_row(entry["star_id"], mrs, pairs[k], spectra, j, sep))
                kept_flux.append(spectra.flux[j])
    entry["spectra"] = [{"pair": p.label, "result": r, "why": w} for p, r, w in zip(pairs, results, whys)]
    entry["kept"] = len(kept_rows)
    if not kept_rows:
        return _FileResult(entry)
    flux = np.vstack(kept_flux)
    return _FileResult(entry, flux, np.tile(labels, (len(kept_rows), 1)), kept_rows)


def _below(snr: float, config) -> bool:
    """A header S/N that is present and under the minimum (NaN is judged after estimating)."""
    return bool(np.isfinite(snr) and snr < config.reject_min_snr)


def _classify(quality, j: int) -> str:
    """The first cut (SPECTRUM_CUTS, the summary's established keys) spectrum j fails, from
    the selection's criteria (preprocess.QualityFlags); the RV and dead-arm criteria are
    "unreliable"."""
    if quality.usable[j]:
        return KEPT
    for cut, criterion in _CUT_CRITERIA:
        if getattr(quality, criterion)[j]:
            return cut
    return "unreliable"


def _row(star_id: str, mrs, pair, spectra, j: int, sep: float) -> dict:
    return {
        "star_id": star_id,
        "obsid": mrs.meta.get("obsid"),
        "filename": mrs.meta.get("filename"),
        "extname_blue": pair.extname_blue,
        "extname_red": pair.extname_red,
        "snr_blue": _rounded(spectra.quality.snr_blue[j]),
        "snr_red": _rounded(spectra.quality.snr_red[j]),
        "lmjm": "" if pair.lmjm is None else pair.lmjm,
        "sep_arcsec": round(sep, 3),
        "rv": _rounded(spectra.rv[j], 3),
        "rv_source": spectra.rv_source[j],
    }


def _rounded(value, digits: int = 2):
    value = float(value)
    return round(value, digits) if np.isfinite(value) else ""


# ---------------------------------------------------------------- summary
def summarise(entries: list[dict], catalog: LabelCatalog, options: BuildOptions, files_now: int | None = None) -> dict:
    """Counts per outcome and cut (files, spectra, stars), masked labels and regions."""
    files = {name: 0 for name in FILE_OUTCOMES}
    spectra = {name: 0 for name in ("considered", *SPECTRUM_CUTS, KEPT)}
    star_stage: dict[str, int] = {}
    star_kept: dict[str, int] = {}
    stages = (*SPECTRUM_CUTS, KEPT)
    for entry in entries:
        files[entry["outcome"]] += 1
        for spectrum in entry["spectra"]:
            spectra["considered"] += 1
            spectra[spectrum["result"]] += 1
            star = entry["star_id"]
            star_stage[star] = max(star_stage.get(star, -1), stages.index(spectrum["result"]))
        if entry["kept"]:
            star_kept[entry["star_id"]] = star_kept.get(entry["star_id"], 0) + entry["kept"]
    stars_removed = {cut: sum(1 for s in star_stage.values() if s == k) for k, cut in enumerate(SPECTRUM_CUTS)}
    summary = {
        "files": {"total": files_now if files_now is not None else len(entries), **files},
        "spectra": spectra,
        "stars": {
            "matched": len({e["star_id"] for e in entries if e["outcome"] == "matched"}),
            "removed_by": stars_removed,
            KEPT: len(star_kept),
        },
        "no_label_stars": len({e["star_id"] for e in entries if e["outcome"] == "no_labels"}),
        "masked_labels": {},
        "regions": {},
        "catalog": catalog.summary(),
        "options": {**asdict(options), "min_snr": options.resolved_min_snr()},
        "ambiguous": [e["detail"] for e in entries if e["outcome"] == "ambiguous"][:MAX_LISTED],
        "unreadable": [e["detail"] for e in entries if e["outcome"] == "unreadable"][:MAX_LISTED],
    }
    summary.update(_label_and_region_counts(star_kept, catalog))
    return summary


def _label_and_region_counts(star_kept: dict[str, int], catalog: LabelCatalog) -> dict:
    row_of = {str(s): k for k, s in enumerate(catalog.star_id)}
    stars = [s for s in star_kept if s in row_of]
    labels = catalog.labels[[row_of[s] for s in stars]] if stars else np.zeros((0, len(LABELS)))
    weights = np.array([star_kept[s] for s in stars], dtype=np.int64)
    masked = {name: int(weights[np.isnan(labels[:, j])].sum()) for j, name in enumerate(LABELS)}
    regions = {}
    for region in default_regions():
        inside = region.contains(labels, LABELS) if stars else np.zeros(0, dtype=bool)
        regions[region.name] = {
            "spectra": int(weights[inside].sum()),
            "stars": int(inside.sum()),
            "description": region.description,
        }
    return {"masked_labels": masked, "regions": regions}


def _one_line(summary: dict) -> str:
    files, spectra = summary["files"], summary["spectra"]
    return (
        f"{files['total']} files, {files['matched']} matched, {files['no_match']} unmatched, "
        f"{files['ambiguous']} ambiguous, {files['unreadable']} unreadable; "
        f"{spectra['considered']} spectra considered, {spectra[KEPT]} kept"
    )


def format_summary(summary: dict) -> str:
    """Human-readable summary for the CLI."""
    lines = [_one_line(summary)]
    spectra, removed = summary["spectra"], summary["stars"]["removed_by"]
    for cut in SPECTRUM_CUTS:
        lines.append(f"  cut {cut:<20} {spectra[cut]:>8} spectra {removed[cut]:>7} stars")
    lines.append(f"  kept {'':<19} {spectra[KEPT]:>8} spectra {summary['stars'][KEPT]:>7} stars")
    for name, counts in summary["regions"].items():
        lines.append(
            f"  region {name:<4} {counts['spectra']:>8} spectra {counts['stars']:>7} stars  ({counts['description']})"
        )
    masked = {k: v for k, v in summary["masked_labels"].items() if v}
    if masked:
        lines.append("  masked labels (kept spectra): " + ", ".join(f"{k} {v}" for k, v in masked.items()))
    for text in summary["ambiguous"][:5]:
        lines.append(f"  ambiguous: {text}")
    return "\n".join(lines)
