"""Import published SPEMR/RRNet weights into a model bundle.

Run folder layout read here:

    RUN/label_config.pkl                 label_list, label_mean, label_std, flux_mean, flux_std
    RUN/SP<k>/weight_best.pkl            base RRNet state dicts, one per member k and network
    RUN/CA<k>/weight_best.pkl            (network names as in the "paper" architecture)
    RUN/<REGION>/SP<k>/weight_best.pkl   optional region sub-models (REGION = S1..S4, the
    RUN/<REGION>/CA<k>/weight_best.pkl   default regions); only their fc1 is kept, and the
                                         rest must equal the base (fc1-only fine-tuning)
    RUN/<REGION>/label_config.pkl        optional: the region's own standardisation (the
                                         authors' <refset>/S<k>/label_config.pkl)

Region statistics. The authors fine-tune each region with its reference subset's own
label_config.pkl (SPEMR fine_tuning.py: get_dataset_info(args, sub_data) reads
<refset>/<sub_data>/label_config.pkl and standardises both the flux, (flux - flux_mean) /
flux_std, and the labels with it; train() reads the region's outputs back with that
label_mean/label_std). Their predict(args, ..., sub_data) likewise standardises the input
and de-standardises the outputs with ONE label_config, the same for both. So a region's
own label_config is honoured as a pair: the region runs on flux standardised with its
flux_mean/flux_std (its own feature pass: the shared convolution + RNN see a different
input) and its outputs (mean and sigma) are de-standardised with its label_mean/label_std,
before the members are combined and the regions fused. Such statistics go into the
bundle's ``region_statistics`` (bundle format version 2). A region label_config equal to
the base's (to 1e-6) adds nothing (the bundle stays version 1); a region folder without
one is taken as standardised like the base. (The authors' __main__ calls predict for a
region model with sub_data="refer_set", the base's config; with a region config that
differs from the base this disagrees with how that region was fine-tuned, and we follow
the fine-tuning, i.e. what the weights mean.)

Labels are matched by name, never by position. label_config lists its labels in its own
order (FeH after MnH); its statistics are read by name. A network's outputs are in the
order the authors fix in their code, whatever label_config's order: SP = (Teff, Logg, FeH)
and CA = (CH, NH, OH, MgH, AlH, SiH, SH, KH, CaH, TiH, CrH, MnH, NiH), the "paper"
architecture's networks. A label_config whose label_mean contradicts its label_list
(e.g. a Teff mean of -0.1: names permuted against the values) is refused. Weights are
read with torch.load(weights_only=True); label_config.pkl with the restricted unpickler.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from .. import config
from .bundle import FORMAT, MANIFEST, MAX_WEIGHT, Statistics, expected_shapes, save_bundle
from ..config import Region, RRNetConfig
from ..errors import InputFileError
from ..safe_pickle import safe_load

WEIGHT_FILE = "weight_best.pkl"
LABEL_CONFIG = "label_config.pkl"
_FOLDER = re.compile(r"^([A-Za-z]+)(\d+)$")


def import_published(run_dir: str | Path, output: str | Path, command: str | None = None) -> Path:
    """Convert a published run folder into a model bundle at ``output``; returns its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputFileError(run_dir, "no such run folder")
    _check_output(run_dir, Path(output).expanduser())
    _, statistics = read_label_config(run_dir / LABEL_CONFIG)
    folders = find_member_folders(run_dir)
    first_file = next(iter(folders.values()))[0]
    reference = config.architecture("paper")
    # The authors' output order, fixed in their code; never label_config's list order.
    networks = {name: tuple(reference.networks[name]) for name in folders}
    architecture = replace(infer_architecture(load_state_dict(first_file), reference, first_file), networks=networks)

    members = [
        {
            name: _checked(load_state_dict(files[k]), architecture, networks[name], files[k])
            for name, files in folders.items()
        }
        for k in range(len(next(iter(folders.values()))))
    ]
    regions = [r for r in config.default_regions() if (run_dir / r.name).is_dir()]
    own = {
        region.name: found
        for region in regions
        if (found := region_statistics(run_dir / region.name / LABEL_CONFIG, region.name, statistics)) is not None
    }
    heads = _region_heads(run_dir, regions, members, architecture, networks, len(members))
    provenance: dict[str, object] = {
        "trained_on": "published",
        "source": str(run_dir.resolve()),
        "command": command or f"spemr import-published {run_dir}",
    }
    if own:
        provenance["region_statistics"] = {name: f"{name}/{LABEL_CONFIG}" for name in own}
    return _save_atomically(
        Path(output),
        lambda folder: save_bundle(
            folder,
            architecture,
            members,
            statistics,
            provenance,
            region_heads=heads or None,
            regions=regions,
            region_statistics=own or None,
        ),
    )


def _check_output(run_dir: Path, output: Path) -> None:
    """Before any work: an existing ``output`` is replaced whole, so it must be a model
    bundle (or an empty folder), and never the run folder or a folder holding it. `-o RUN`
    deleted the published weights, and `-o` naming any folder deleted its contents."""
    run, target = run_dir.resolve(), output.resolve()
    if target == run or target in run.parents:
        raise InputFileError(output, "is (or holds) the published run folder; choose another output")
    if not output.exists():
        return
    if not output.is_dir():
        raise InputFileError(output, "exists and is not a folder: choose another output")
    if any(output.iterdir()) and not _is_model_bundle(output):
        raise InputFileError(output, "exists and is not a spemr model folder: choose another output")


def _is_model_bundle(folder: Path) -> bool:
    manifest = folder / MANIFEST
    try:
        if not manifest.is_file() or manifest.stat().st_size > 64 * 2**20:
            return False
        return json.loads(manifest.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


def _save_atomically(output: Path, save) -> Path:
    """Write the bundle into a temporary sibling folder and rename it into place once it
    is complete and validated: a failed import leaves no complete-looking bundle (and
    an existing bundle at ``output`` is only replaced by a complete one)."""
    output = output.expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.importing-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        save(temporary)
        if output.exists():
            if not output.is_dir():
                raise InputFileError(output, "exists and is not a folder: choose another output")
            previous = output.with_name(f".{output.name}.replaced-{os.getpid()}")
            os.replace(output, previous)
            os.replace(temporary, output)
            shutil.rmtree(previous, ignore_errors=True)
        else:
            os.replace(temporary, output)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return output


# ------------------------------------------------------------------ pieces
def read_label_config(path: Path) -> tuple[list[str], Statistics]:
    """(label names in the file's order, mapped to spemr names; statistics in spemr order)."""
    data = safe_load(path)
    try:
        names = [str(n) for n in data["label_list"]]
        arrays = {
            key: np.asarray(data[key], dtype=np.float64) for key in ("label_mean", "label_std", "flux_mean", "flux_std")
        }
    except (KeyError, TypeError, ValueError) as error:
        raise InputFileError(
            path, f"not a label_config (needs label_list, label_mean, label_std, flux_mean, flux_std): {error!r}"
        ) from None
    to_label = config.published_to_label()
    unknown = [n for n in names if n not in to_label and n not in config.LABELS]
    if unknown:
        raise InputFileError(path, f"unknown label names {unknown}")
    ours = [to_label.get(n, n) for n in names]
    if sorted(ours) != sorted(config.LABELS):
        raise InputFileError(path, f"labels {ours} are not the 16 spemr labels")
    if any(arrays[k].shape != (len(names),) for k in ("label_mean", "label_std")):
        raise InputFileError(path, "label_mean/label_std do not match label_list")
    _check_label_statistics(path, ours, arrays["label_mean"], arrays["label_std"])
    position = {name: i for i, name in enumerate(ours)}
    order = [position[name] for name in config.LABELS]
    statistics = Statistics(
        flux_mean=arrays["flux_mean"],
        flux_std=arrays["flux_std"],
        label_mean=arrays["label_mean"][order],
        label_std=arrays["label_std"][order],
        source=f"published {path.name}",
    )
    return ours, statistics


def _check_label_statistics(path: Path, names: list[str], mean: np.ndarray, std: np.ndarray) -> None:
    """Refuse statistics that contradict their names: a mean outside the label's plausible
    range, or a std that is not positive and finite."""
    ranges = config.plausible_training_mean()
    wrong = [f"{name} mean {m:.4g}" for name, m in zip(names, mean) if not ranges[name][0] <= m <= ranges[name][1]]
    if wrong:
        raise InputFileError(
            path,
            f"label_list contradicts label_mean ({', '.join(wrong[:4])}"
            f"{', ...' if len(wrong) > 4 else ''}): names and values out of step",
        )
    bad_std = [name for name, s in zip(names, std) if not (np.isfinite(s) and s > 0)]
    if bad_std:
        raise InputFileError(path, f"label_std is not positive and finite for {', '.join(bad_std)}")


def region_statistics(path: Path, region: str, base: Statistics) -> Statistics | None:
    """A region's own label_config.pkl: its statistics when they differ from the base's
    (to 1e-6 relative), None when the region has none or the same as the base."""
    if not path.exists():
        return None
    if not path.is_file():
        raise InputFileError(path, f"region {region}: not a file (expected the region's label_config.pkl)")
    try:
        _, own = read_label_config(path)
    except InputFileError as error:  # say which label_config.pkl: the base's has the same name
        raise InputFileError(path, f"region {region}: {error.problem}") from None
    same = all(
        np.allclose(getattr(own, name), getattr(base, name), rtol=1e-6, atol=0)
        for name in ("flux_mean", "flux_std", "label_mean", "label_std")
    )
    return None if same else replace(own, source=f"published {region}/{path.name}")


def find_member_folders(folder: Path) -> dict[str, list[Path]]:
    """network name -> weight files ordered by member number, e.g. {"SP": [SP0/..., SP1/...]}."""
    known = config.architecture("paper").networks
    found: dict[str, dict[int, Path]] = {}
    for child in sorted(folder.iterdir()):
        match = _FOLDER.match(child.name)
        if match and match.group(1) in known and (child / WEIGHT_FILE).is_file():
            found.setdefault(match.group(1), {})[int(match.group(2))] = child / WEIGHT_FILE
    missing = [name for name in known if name not in found]
    if missing:
        raise InputFileError(folder, f"no {'/'.join(f'{n}<k>/{WEIGHT_FILE}' for n in missing)} found")
    numbers = {name: sorted(files) for name, files in found.items()}
    if len({tuple(v) for v in numbers.values()}) != 1:
        raise InputFileError(folder, f"networks have different members: {numbers}")
    return {name: [found[name][k] for k in sorted(found[name])] for name in known}


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A published weight_best.pkl: tensors only (weights_only), DataParallel prefix removed."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt file, or objects weights_only refuses
        raise InputFileError(
            path, f"cannot load weights ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputFileError(path, "not a PyTorch state dict")
    return {key.removeprefix("module."): value for key, value in state.items()}


def infer_architecture(
    state: Mapping[str, torch.Tensor], reference: RRNetConfig, path: Path | str = "weights"
) -> RRNetConfig:
    """Read block widths, RNN steps and head widths off the tensor shapes; the rest
    (mode post-RNN, input length, dropout) comes from ``reference``."""
    try:
        channels, i = [], 0
        while f"ResBlock_list.{i}.0.ResBlock.0.weight" in state:
            channels.append(int(state[f"ResBlock_list.{i}.0.ResBlock.0.weight"].shape[0]))
            i += 1
        n_flat = int(state["fc1.0.weight"].shape[1])
        rnn_input = int(state["rnn.weight_ih_l0"].shape[1])
        return replace(
            reference,
            resblock_channels=tuple(channels),
            n_rnn_steps=n_flat // rnn_input,
            fc1_width=int(state["fc1.0.weight"].shape[0]),
            fc2_width=int(state["fc2.0.weight"].shape[0]),
        )
    except (KeyError, IndexError, ZeroDivisionError) as error:
        raise InputFileError(path, f"not the published RRNet key layout (missing {error})") from None


def _checked(state: dict, architecture: RRNetConfig, labels: tuple[str, ...], path: Path) -> dict:
    expected = expected_shapes(architecture, len(labels))
    for key, shape in expected.items():
        if key not in state:
            raise InputFileError(path, f"missing tensor {key} (not the published RRNet layout)")
        if tuple(state[key].shape) != shape:
            raise InputFileError(
                path,
                f"tensor {key} has shape {list(state[key].shape)}, expected {list(shape)} "
                f"({len(labels)} labels: {', '.join(labels)})",
            )
        _require_usable_values(key, state[key], path)
    return {key: state[key] for key in expected}


def _require_usable_values(key: str, tensor: torch.Tensor, path: Path) -> None:
    """Floating-point, finite, trained-network-sized weights: bool weights stopped the
    import with a traceback, and NaN ones were blamed on a region (issue 11)."""
    if not tensor.is_floating_point():
        raise InputFileError(
            path, f"tensor {key} has dtype {str(tensor.dtype).removeprefix('torch.')}; weights must be floating point"
        )
    if not bool(torch.isfinite(tensor).all()):
        raise InputFileError(path, f"tensor {key} has NaN or infinite values")
    if tensor.numel() and float(tensor.abs().max()) > MAX_WEIGHT:
        raise InputFileError(
            path,
            f"tensor {key} has values of {float(tensor.abs().max()):.3g} (over {MAX_WEIGHT:g}: not a trained network's weights)",
        )


def _region_heads(
    run_dir: Path,
    regions: list[Region],
    members: list[dict],
    architecture: RRNetConfig,
    networks: Mapping[str, tuple[str, ...]],
    n_members: int,
) -> list[dict]:
    if not regions:
        return []
    heads: list[dict] = [{name: {} for name in networks} for _ in range(n_members)]
    for region in regions:
        folders = find_member_folders(run_dir / region.name)
        for name, files in folders.items():
            if len(files) != n_members:
                raise InputFileError(run_dir / region.name, f"{len(files)} {name} members, base has {n_members}")
            for k, path in enumerate(files):
                state = _checked(load_state_dict(path), architecture, networks[name], path)
                _require_fc1_only(state, members[k][name], path)
                heads[k][name][region.name] = {"0.weight": state["fc1.0.weight"], "0.bias": state["fc1.0.bias"]}
    return heads


def _require_fc1_only(region_state: Mapping, base_state: Mapping, path: Path) -> None:
    """SPEMR fine-tunes fc1 only; a region model that changed anything else cannot be
    represented by one shared feature pass, so refuse it rather than import it wrongly."""
    for key, value in base_state.items():
        if not key.startswith("fc1.") and not torch.allclose(region_state[key], value, rtol=0, atol=1e-6):
            raise InputFileError(
                path,
                f"differs from the base model in {key}: only fc1 may differ between a region sub-model and its base",
            )
