"""`spemr report`: the paper's diagnostics for a catalog, as one self-contained HTML file
(PNG figures embedded as base64), a PDF, or one PNG per figure.

Figures: Kiel diagrams (Teff, log g coloured by [Fe/H], with error bars) in S/N bins with
isochrones overlaid; the predicted 1-sigma against S/N per label beside the scatter of
repeat observations of the same star (the paper's uncertainty figure); fit-quality and
flag distributions. A header says which model made the catalog and what it was trained on.

S/N is the blue arm's (``snr_blue``), as the LAMOST MRS catalogs quote it.
matplotlib is an optional dependency (``pip install "spemr[report]"``), imported only
here and only when a report is made; no pyplot, so no global backend and no Qt."""

from __future__ import annotations

import base64
import datetime
import html
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import config
from .catalog_store import output_format, read_table
from ..errors import InputFileError, SpemrError, display_name

FORMATS = ("html", "pdf", "png")
# The labels of the uncertainty figure and the Kiel diagram (catalog names).
SIGMA_LABELS = ("Teff", "Logg", "FeH")
KIEL_SNR_EDGES = (0.0, 20.0, 40.0, 80.0, math.inf)
SIGMA_SNR_EDGES = (0.0, 10.0, 15.0, 20.0, 30.0, 40.0, 60.0, 80.0, 120.0, 200.0, math.inf)
KIEL_TEFF_RANGE = (3200.0, 7500.0)  # K, the x range shown at least
MIN_REPEATS_PER_BIN = 2  # repeat-scatter points from fewer residuals are not drawn
ISOCHRONE_FILE = "mist_iso_7gyr.csv"
FLAGS_ALWAYS_SHOWN = ("poor_fit", "region_mismatch")


def default_isochrones() -> Path:
    """The MIST 7 Gyr isochrones of the project's shared data (``SPEMR_SHARED_DATA``, else
    ``../shared/data`` beside a source checkout); they need not exist."""
    shared = os.environ.get("SPEMR_SHARED_DATA")
    folder = Path(shared) if shared else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return folder / ISOCHRONE_FILE


def _infos():
    return {info.name: info for info in config.label_infos()}


@dataclass
class Catalog:
    path: Path
    columns: dict[str, list]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def has(self, name: str) -> bool:
        return name in self.columns

    def numbers(self, name: str) -> np.ndarray:
        """A column as float64, None/unparsable as NaN."""
        out = np.full(self.n_rows, np.nan)
        for i, value in enumerate(self.columns.get(name, [])):
            try:
                out[i] = float(value)
            except (TypeError, ValueError):
                pass
        return out

    def texts(self, name: str) -> list[str]:
        return ["" if v is None else str(v) for v in self.columns.get(name, [None] * self.n_rows)]


def required_columns() -> list[str]:
    infos = _infos()
    return ["snr_blue"] + [c for name in SIGMA_LABELS for c in (infos[name].catalog, f"{infos[name].catalog}_err")]


def load_catalog(path: str | Path) -> Catalog:
    """Read a catalog written by `spemr catalog` / `spemr predict`; InputFileError (one line)
    when it is not one, is empty or lacks the columns the report needs."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "no such catalog file")
    try:
        output_format(path)
    except SpemrError:
        raise InputFileError(path, "not a catalog: expected a .csv, .parquet or .fits file") from None
    try:
        columns = read_table(path)
    except SpemrError:
        raise
    except Exception as error:  # astropy/pyarrow raise many kinds on a file that is not a table
        raise InputFileError(path, f"cannot be read as a catalog table ({type(error).__name__})") from None
    missing = [c for c in required_columns() if c not in columns]
    if missing:
        raise InputFileError(path, f"not a spemr catalog: missing column(s) {', '.join(missing)}")
    if not any(len(v) for v in columns.values()):
        raise InputFileError(path, "the catalog is empty (no rows)")
    return Catalog(path, columns, _metadata(path))


def _metadata(path: Path) -> dict[str, str]:
    """Header keywords (FITS) or schema metadata (Parquet) written with the catalog."""
    try:
        fmt = output_format(path)
        if fmt == "fits":
            from astropy.io import fits

            with fits.open(path, memmap=False) as hdus:
                header = hdus[1].header if len(hdus) > 1 else hdus[0].header
                return {
                    key: str(header[key])
                    for key in ("SPEMRMOD", "TRAINED", "SYNTHET", "CAVEAT", "FITCHI2", "FITSPRD")
                    if key in header
                }
        if fmt == "parquet":
            import pyarrow.parquet as pq

            meta = pq.read_schema(str(path)).metadata or {}
            return {k.decode(): v.decode() for k, v in meta.items() if not k.startswith(b"ARROW")}
    except Exception:  # metadata is a nicety: the table itself was read
        return {}
    return {}


# ================================================================ statistics
def star_keys(catalog: Catalog) -> list[str]:
    """Which star each row is: designation, else obsid, else file name ("" when unknown)."""
    keys = []
    designation, obsid, filename = catalog.texts("designation"), catalog.texts("obsid"), catalog.texts("filename")
    for d, o, f in zip(designation, obsid, filename):
        keys.append(d.strip() or o.strip() or f.strip())
    return keys


def repeat_groups(catalog: Catalog) -> list[str]:
    """Star key plus the kind of spectrum: a coadd is made of its file's exposures, so
    coadds are compared with coadds (of other files) and exposures with exposures."""
    spectrum = catalog.texts("spectrum")
    extname = catalog.texts("extname_blue")
    out = []
    for key, s, e in zip(star_keys(catalog), spectrum, extname):
        coadd = s == "coadd" or e.upper().startswith("COADD")
        out.append(f"{key}\x00{'coadd' if coadd else 'exposure'}" if key else "")
    return out


@dataclass
class BinnedScatter:
    edges: np.ndarray  # (k+1,)
    centre: np.ndarray  # (k,) median S/N of the residuals in the bin (NaN when empty)
    scatter: np.ndarray  # (k,) rms of the de-biased residuals (NaN with < MIN_REPEATS_PER_BIN)
    n_obs: np.ndarray  # (k,) residuals in the bin
    n_stars: int  # stars with >= 2 observations


def repeat_scatter(groups: Sequence[str], snr, values, edges=SIGMA_SNR_EDGES) -> BinnedScatter:
    """Scatter of repeat observations of the same star, binned by S/N.

    For each group (one star, one kind of spectrum; "" = unknown, skipped) with n >= 2
    finite values, each value's residual from the group mean is scaled by sqrt(n / (n - 1))
    so that its expected square is the single-observation variance; a bin's scatter is the
    rms of the scaled residuals of the observations whose S/N falls in it."""
    snr = np.asarray(snr, float)
    values = np.asarray(values, float)
    edges = np.asarray(edges, float)
    residual = np.full(len(values), np.nan)
    members: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        if group and np.isfinite(values[i]) and np.isfinite(snr[i]):
            members.setdefault(group, []).append(i)
    n_stars = 0
    for index in members.values():
        n = len(index)
        if n < 2:
            continue
        n_stars += 1
        x = values[index]
        residual[index] = (x - x.mean()) * math.sqrt(n / (n - 1))
    k = len(edges) - 1
    scatter, centre, n_obs = np.full(k, np.nan), np.full(k, np.nan), np.zeros(k, int)
    which = np.digitize(snr, edges) - 1
    for b in range(k):
        chosen = (which == b) & np.isfinite(residual)
        n_obs[b] = int(chosen.sum())
        if n_obs[b]:
            centre[b] = float(np.median(snr[chosen]))
        if n_obs[b] >= MIN_REPEATS_PER_BIN:
            scatter[b] = float(np.sqrt(np.mean(residual[chosen] ** 2)))
    return BinnedScatter(edges, centre, scatter, n_obs, n_stars)


def binned_median(snr, sigma, edges=SIGMA_SNR_EDGES) -> tuple[np.ndarray, np.ndarray]:
    """(median S/N, median sigma) per S/N bin (NaN when empty)."""
    snr, sigma, edges = np.asarray(snr, float), np.asarray(sigma, float), np.asarray(edges, float)
    ok = np.isfinite(snr) & np.isfinite(sigma)
    which = np.digitize(snr, edges) - 1
    k = len(edges) - 1
    x, y = np.full(k, np.nan), np.full(k, np.nan)
    for b in range(k):
        chosen = ok & (which == b)
        if chosen.any():
            x[b], y[b] = np.median(snr[chosen]), np.median(sigma[chosen])
    return x, y


def flag_counts(catalog: Catalog) -> dict[str, int]:
    counts = {name: 0 for name in FLAGS_ALWAYS_SHOWN}
    for text in catalog.texts("flags"):
        for token in filter(None, (t.strip() for t in text.split("|"))):
            counts[token] = counts.get(token, 0) + 1
    return counts


# ================================================================= figures
def _matplotlib():
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise SpemrError('spemr report needs matplotlib, which is not installed: pip install "spemr[report]"') from None
    return matplotlib, Figure


def _label(name: str) -> str:
    info = _infos()[name]
    return f"{info.display} ({info.unit})"


def _snr_bin_name(low: float, high: float) -> str:
    return f"S/N ≥ {low:g}" if not math.isfinite(high) else f"{low:g} ≤ S/N < {high:g}"


def kiel_figure(catalog: Catalog, isochrones=()):
    _, Figure = _matplotlib()
    infos = _infos()
    teff = catalog.numbers(infos["Teff"].catalog)
    logg = catalog.numbers(infos["Logg"].catalog)
    feh = catalog.numbers(infos["FeH"].catalog)
    teff_err = catalog.numbers(infos["Teff"].catalog + "_err")
    logg_err = catalog.numbers(infos["Logg"].catalog + "_err")
    snr = catalog.numbers("snr_blue")
    ok = np.isfinite(teff) & np.isfinite(logg)
    edges = KIEL_SNR_EDGES
    panels = [(_snr_bin_name(lo, hi), ok & (snr >= lo) & (snr < hi)) for lo, hi in zip(edges[:-1], edges[1:])]
    panels.append(("S/N unknown", ok & ~np.isfinite(snr)))
    panels = [(name, chosen) for name, chosen in panels if chosen.any()] or [("all spectra", ok)]
    fig = Figure(figsize=(4.2 * len(panels) + 1.0, 4.4), layout="constrained")
    axes = fig.subplots(1, len(panels), sharex=True, sharey=True, squeeze=False)[0]
    finite_feh = feh[ok & np.isfinite(feh)]
    vmin, vmax = np.percentile(finite_feh, [2, 98]) if finite_feh.size else (-1.0, 0.5)
    if vmax <= vmin:
        vmin, vmax = vmin - 0.1, vmax + 0.1
    mappable = None
    for ax, (title, chosen) in zip(axes, panels):
        for k, iso in enumerate(isochrones):
            ax.plot(iso.teff, iso.logg, lw=1.0, color=f"C{k % 10}", alpha=0.8, label=iso.name, zorder=1)
        ax.errorbar(
            teff[chosen],
            logg[chosen],
            xerr=np.nan_to_num(teff_err[chosen]),
            yerr=np.nan_to_num(logg_err[chosen]),
            fmt="none",
            ecolor="0.75",
            elinewidth=0.6,
            zorder=2,
        )
        mappable = ax.scatter(
            teff[chosen],
            logg[chosen],
            c=feh[chosen],
            cmap="viridis",
            vmin=vmin,
            vmax=vmax,
            s=14,
            edgecolors="k",
            linewidths=0.3,
            zorder=3,
        )
        n = int(chosen.sum())
        ax.set_title(f"{title} ({n} {'spectrum' if n == 1 else 'spectra'})", fontsize=10)
        ax.set_xlabel(_label("Teff"))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(_label("Logg"))
    axes[0].invert_xaxis()
    axes[0].set_ylim(5.5, -0.5)
    # the FGKM range at least, the data always (isochrones reach 1e5 K on the white-dwarf track)
    hot = max(KIEL_TEFF_RANGE[1], float(np.nanmax(teff[ok])) + 300.0) if ok.any() else KIEL_TEFF_RANGE[1]
    cool = min(KIEL_TEFF_RANGE[0], float(np.nanmin(teff[ok])) - 300.0) if ok.any() else KIEL_TEFF_RANGE[0]
    axes[0].set_xlim(hot, cool)
    if isochrones:
        axes[-1].legend(fontsize=8, loc="upper left", title="isochrones", title_fontsize=8)
    if mappable is not None:
        fig.colorbar(mappable, ax=list(axes), label=_label("FeH"), shrink=0.9)
    return fig


def uncertainty_figure(catalog: Catalog, labels=SIGMA_LABELS):
    _, Figure = _matplotlib()
    infos = _infos()
    snr = catalog.numbers("snr_blue")
    groups = repeat_groups(catalog)
    fig = Figure(figsize=(4.2 * len(labels), 4.0), layout="constrained")
    axes = fig.subplots(1, len(labels), squeeze=False)[0]
    for ax, name in zip(axes, labels):
        column = infos[name].catalog
        value, sigma = catalog.numbers(column), catalog.numbers(f"{column}_err")
        ok = np.isfinite(snr) & np.isfinite(sigma) & (snr > 0)
        ax.scatter(snr[ok], sigma[ok], s=6, color="0.6", alpha=0.5, label="predicted σ (each spectrum)")
        x, y = binned_median(snr[ok], sigma[ok])
        drawn = np.isfinite(y)
        ax.plot(x[drawn], y[drawn], "-o", color="C0", ms=4, label="predicted σ, median per S/N bin")
        repeats = repeat_scatter(groups, snr, value)
        shown = np.isfinite(repeats.scatter)
        if shown.any():
            ax.plot(
                repeats.centre[shown],
                repeats.scatter[shown],
                "s--",
                color="C3",
                ms=5,
                label=f"repeat-observation scatter ({repeats.n_stars} stars)",
            )
            for cx, cy, n in zip(repeats.centre[shown], repeats.scatter[shown], repeats.n_obs[shown]):
                ax.annotate(str(n), (cx, cy), textcoords="offset points", xytext=(3, 4), fontsize=7, color="C3")
        else:
            ax.text(0.5, 0.92, "no repeat observations", transform=ax.transAxes, ha="center", fontsize=8, color="C3")
        if ok.any():
            ax.set_xscale("log")
            # plain numbers, and no labels on minor ticks: 3x10^1 and 4x10^1 ran into each other
            from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("S/N (blue arm)")
        ax.set_ylabel(f"1σ {_label(name)}")
        ax.set_title(infos[name].display, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper right")
    return fig


def quality_figure(catalog: Catalog):
    _, Figure = _matplotlib()
    fig = Figure(figsize=(14.0, 3.8), layout="constrained")
    axes = fig.subplots(1, 4)
    thresholds = {
        "fit_chi2": _number(catalog.metadata.get("FITCHI2")),
        "member_spread": _number(catalog.metadata.get("FITSPRD")),
    }
    for ax, name in zip(axes[:3], ("fit_chi2", "member_spread", "sigma_inflation")):
        values = catalog.numbers(name)
        values = values[np.isfinite(values)]
        if not catalog.has(name) or not values.size:
            ax.text(0.5, 0.5, f"no {name} in this catalog", transform=ax.transAxes, ha="center")
        elif name == "fit_chi2" and values.min() > 0 and values.max() / values.min() > 30:
            ax.hist(values, bins=np.geomspace(values.min(), values.max() * 1.001, 30), color="C0")
            ax.set_xscale("log")
        else:
            ax.hist(values, bins=30, color="C0")
        ax.yaxis.get_major_locator().set_params(integer=True)
        limit = thresholds.get(name)
        if limit is not None:
            ax.axvline(limit, color="C3", ls="--", label="poor_fit threshold")
            ax.legend(fontsize=7)
        ax.set_xlabel(name)
        ax.set_ylabel("spectra")
    counts = flag_counts(catalog)
    names = sorted(counts, key=lambda k: (-counts[k], k))
    ax = axes[3]
    ax.barh(
        range(len(names)), [counts[k] for k in names], color=["C3" if k in FLAGS_ALWAYS_SHOWN else "C1" for k in names]
    )
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for k, name in enumerate(names):
        ax.annotate(str(counts[name]), (counts[name], k), textcoords="offset points", xytext=(3, -3), fontsize=8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlim(0, max(counts.values(), default=0) * 1.15 + 1)
    ax.invert_yaxis()
    ax.set_xlabel(f"spectra (of {catalog.n_rows})")
    ax.set_title("flags", fontsize=10)
    return fig


def _number(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


# ================================================================= header
def _short(text) -> str:
    value = _number(text)
    return f"{value:.4g}" if value is not None else str(text)


def header_lines(catalog: Catalog) -> list[str]:
    """What made the catalog: the model, its training data, the fit-quality calibration."""
    meta = catalog.metadata
    trained = sorted({t for t in catalog.texts("model_trained_on") if t}) or (
        [meta["TRAINED"]] if "TRAINED" in meta else []
    )
    lines = [
        f"catalog: {display_name(catalog.path)} ({catalog.n_rows} spectra, "
        f"{len({k for k in star_keys(catalog) if k})} stars)"
    ]
    lines.append(f"model: {meta.get('SPEMRMOD', 'not recorded (a CSV catalog has no header; FITS and Parquet do)')}")
    lines.append(f"trained on: {', '.join(trained) if trained else 'not recorded'}")
    if "random" in trained:
        lines.append("caveat: the model has random weights: its labels mean nothing")
    elif "synthetic" in trained or str(meta.get("SYNTHET", "")).lower() in ("true", "t"):
        lines.append(
            "caveat: the model was trained on synthetic spectra: its labels are plausible, not calibrated on real stars"
        )
    elif meta.get("CAVEAT"):
        lines.append(f"caveat: {meta['CAVEAT']}")
    if "FITCHI2" in meta:
        lines.append(
            f"fit-quality thresholds (poor_fit above): fit_chi2 {_short(meta['FITCHI2'])}"
            + (f", member_spread {_short(meta['FITSPRD'])}" if "FITSPRD" in meta else "")
        )
    usable = catalog.texts("usable")
    if any(usable):
        lines.append(f"usable spectra: {sum(u.lower() in ('true', '1') for u in usable)} of {catalog.n_rows}")
    return lines


# ================================================================= writing
FIGURES = (
    (
        "kiel",
        "Kiel diagrams by S/N",
        "Teff against log g coloured by [Fe/H], 1-sigma error bars, one panel per S/N (blue arm) bin",
    ),
    (
        "uncertainty",
        "Predicted uncertainty against S/N",
        "Grey: each spectrum's predicted 1-sigma; blue: its median per S/N bin; red: the scatter of repeat "
        "observations of the same star (exposures against exposures, coadds of different files against "
        "each other; residuals from the star's mean scaled by sqrt(n/(n-1))), with the number of "
        "observations per bin. Where the network is calibrated the red and blue curves agree.",
    ),
    (
        "quality",
        "Fit quality and flags",
        "fit_chi2, member_spread, sigma_inflation and the flags raised (poor_fit and region_mismatch always listed)",
    ),
)


def make_figures(catalog: Catalog, isochrones=()) -> dict:
    return {
        "kiel": kiel_figure(catalog, isochrones),
        "uncertainty": uncertainty_figure(catalog),
        "quality": quality_figure(catalog),
    }


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def write_report(
    catalog_path: str | Path, output: str | Path, fmt: str | None = None, isochrones_path: str | Path | None = None
) -> list[Path]:
    """Write the report; returns the files written. fmt: html (default, or from the
    output's suffix), pdf, or png (one file per figure: OUTPUT_STEM-<figure>.png)."""
    output = Path(output)
    fmt = fmt or (output.suffix.lstrip(".").lower() if output.suffix.lower() in (".pdf", ".png") else "html")
    if fmt not in FORMATS:
        raise SpemrError(f"report format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    _matplotlib()
    catalog = load_catalog(catalog_path)
    isochrones = []
    if isochrones_path is not None:
        from .isochrones import read_isochrones

        isochrones = read_isochrones(isochrones_path)
    figures = make_figures(catalog, isochrones)
    header = header_lines(catalog)
    try:
        if fmt == "png":
            written = []
            for key, fig in figures.items():
                path = output.with_name(f"{output.stem}-{key}.png")
                path.write_bytes(_png(fig))
                written.append(path)
            return written
        if fmt == "pdf":
            from matplotlib.backends.backend_pdf import PdfPages

            with PdfPages(output) as pdf:
                pdf.savefig(_header_figure(header))
                for fig in figures.values():
                    pdf.savefig(fig)
            return [output]
        output.write_text(_html(header, figures, isochrones_path), encoding="utf-8")
        return [output]
    except OSError as error:
        raise SpemrError(f"{display_name(output)}: cannot write the report ({error.strerror or error})") from None


def _header_figure(lines: list[str]):
    _, Figure = _matplotlib()
    fig = Figure(figsize=(11.0, 3.0))
    fig.text(0.03, 0.9, "spemr catalog report", fontsize=14, weight="bold", va="top")
    for k, line in enumerate(lines):
        fig.text(0.03, 0.75 - 0.09 * k, line, fontsize=9, va="top")
    return fig


def _html(header: list[str], figures: dict, isochrones_path) -> str:
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>spemr catalog report</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:1500px}"
        "img{max-width:100%;border:1px solid #ddd}.caveat{color:#7a4b00;font-weight:bold}"
        "p.note{color:#444;font-size:90%}</style></head><body>",
        "<h1>spemr catalog report</h1>",
        '<section id="header"><ul>',
    ]
    for line in header:
        css = ' class="caveat"' if line.startswith("caveat:") else ""
        parts.append(f"<li{css}>{html.escape(line)}</li>")
    iso = f"isochrones: {display_name(isochrones_path)}" if isochrones_path is not None else "no isochrones"
    parts.append(f"<li>{html.escape(iso)}; made {stamp}</li></ul></section>")
    for key, title, note in FIGURES:
        data = base64.b64encode(_png(figures[key])).decode("ascii")
        parts.append(
            f'<section id="{key}"><h2>{html.escape(title)}</h2>'
            f'<p class="note">{html.escape(note)}</p>'
            f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}"></section>'
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
