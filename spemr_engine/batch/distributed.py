"""The catalog pipeline on a Dask cluster (``spemr catalog ... --cluster ADDRESS``).

Why Dask distributed: it is pure Python from PyPI (``pip install 'spemr[cluster]'``),
light next to Ray, talks to Slurm/PBS/SGE through dask-jobqueue or a plain
``dask scheduler`` + ``srun dask worker``, and its futures API maps one-to-one onto the
single-machine pipeline: the client (the ``spemr catalog`` process) keeps discovery,
resume, chunk commits and the final assembly; each worker reads, preprocesses and
labels a batch of files and sends back rows. See docs/cluster.md.

The model is loaded once per worker by a worker plugin (also on workers that join
later), never per task. Inputs and the model folder must be visible to the workers at
the same paths (a shared file system, as on any cluster).

Nothing here is imported by the base install: spemr_engine.batch.catalog imports this module
only when a cluster is asked for, and it works (with a clear error) without Dask.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Generator

from . import catalog_rows
from ..errors import SpemrError

try:  # optional dependency: spemr[cluster]
    from distributed import WorkerPlugin as _WorkerPluginBase
except ImportError:  # pragma: no cover - exercised only without dask installed
    _WorkerPluginBase = object  # type: ignore[assignment,misc]

PLUGIN_NAME = "spemr-model"
SCHEMES = ("dask://", "tcp://", "tls://", "local:", "file://")


def _dask():
    try:
        import distributed
    except ImportError:
        raise SpemrError("--cluster needs Dask distributed: pip install 'spemr[cluster]'") from None
    return distributed


# ------------------------------------------------------------------ connecting
def connect(address: str):
    """A Client for "local:N", "dask://HOST:PORT" (or tcp://, tls://) or
    "file://SCHEDULER.json"; returns (client, cluster we started or None)."""
    distributed = _dask()
    if not address.startswith(SCHEMES):
        raise SpemrError(f"--cluster {address}: expected dask://HOST:PORT, local:N or file://SCHEDULER.json")
    try:
        if address.startswith("local:"):
            return _local_cluster(distributed, address)
        if address.startswith("file://"):
            return distributed.Client(scheduler_file=address[len("file://") :], timeout="30s"), None
        target = "tcp://" + address[len("dask://") :] if address.startswith("dask://") else address
        return distributed.Client(target, timeout="30s"), None
    except (OSError, TimeoutError, ValueError) as error:
        raise SpemrError(f"--cluster {address}: cannot connect ({error})") from None


def _local_cluster(distributed, address: str):
    text = address[len("local:") :]
    if not text.isdigit() or int(text) < 1:
        raise SpemrError(f"--cluster {address}: local:N needs a worker count N >= 1")
    cluster = distributed.LocalCluster(
        n_workers=int(text), processes=True, threads_per_worker=1, dashboard_address=None, silence_logs=40
    )
    return distributed.Client(cluster), cluster


# ------------------------------------------------------------------ worker side
class ModelPlugin(_WorkerPluginBase):
    """Worker plugin: builds the Labeller (the model on the worker's device) once per
    worker. A lock serialises inference when a worker runs several threads."""

    name = PLUGIN_NAME

    def __init__(self, model_path: str, device: str, batch_size: int):
        self.model_path = model_path
        self.device = device
        self.batch_size = batch_size
        self.labeller = None
        self.lock = threading.Lock()
        self.n_tasks = 0  # tasks this worker labelled with its one model

    def setup(self, worker=None):
        from ..model.bundle import load_bundle

        self.labeller = catalog_rows.Labeller(load_bundle(self.model_path), self.device, self.batch_size)

    def teardown(self, worker=None):
        self.labeller = None

    def __getstate__(self):
        return {"model_path": self.model_path, "device": self.device, "batch_size": self.batch_size}

    def __setstate__(self, state):
        self.__init__(**state)


def label_files(paths: list[str], options: catalog_rows.PrepareOptions) -> dict[str, list[dict]]:
    """Dask task: read, preprocess and label a batch of files on this worker."""
    from distributed import get_worker

    prepared = catalog_rows.prepare_batch(paths, options)
    plugin: Any = get_worker().plugins[PLUGIN_NAME]  # this module's ModelPlugin
    with plugin.lock:
        plugin.n_tasks += 1
        return plugin.labeller.label(prepared)


# ------------------------------------------------------------------ client side
def dask_results(
    units: list[list[str]], settings, bundle, control, address: str
) -> Generator[tuple[dict[str, list[dict]], bool], None, None]:
    """(rows by input file, True) for each work unit, in completion order, computed on
    the cluster: one task per unit (see catalog.work_units), so a unit's inference
    blocks are the same as on one machine.

    At most two tasks per worker are in flight (bounded memory on the client); a
    task whose worker died repeatedly (Dask's KilledWorker) becomes worker_crashed rows."""
    distributed = _dask()
    client, cluster = connect(address)
    try:
        _register_model(client, str(bundle.path), settings, address)
        options = catalog_rows.PrepareOptions.from_settings(settings, bundle)
        queue = list(reversed(units))
        in_flight: dict = {}
        while queue or in_flight:
            control.wait_while_paused()
            if control.cancelled():
                return
            limit = 2 * max(1, len(client.scheduler_info().get("workers", {})))
            while queue and len(in_flight) < limit and not control.paused():
                unit = queue.pop()
                in_flight[client.submit(label_files, unit, options, pure=False)] = unit
            finished = [f for f in in_flight if f.done()]
            if not finished:
                time.sleep(0.05)
                continue
            for future in finished:
                yield _task_rows(distributed, future, in_flight.pop(future)), True
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _register_model(client, model_path: str, settings, address: str) -> None:
    try:
        client.register_plugin(ModelPlugin(model_path, settings.device, settings.batch_size), name=PLUGIN_NAME)
    except SpemrError as error:
        raise SpemrError(f"--cluster {address}: a worker cannot load the model ({error})") from None
    except Exception as error:  # raised remotely: any type
        raise SpemrError(
            f"--cluster {address}: a worker cannot load the model "
            f"{Path(model_path).name} ({type(error).__name__}: {error})"
        ) from None


def _task_rows(distributed, future, paths: list[str]) -> dict[str, list[dict]]:
    if future.status == "finished":
        return future.result()
    error = future.exception()
    if isinstance(error, distributed.KilledWorker):
        return {
            p: catalog_rows.failed_file(p, "worker_crashed", "the Dask worker died while labelling this file").rows
            for p in paths
        }
    raise SpemrError(
        f"Dask task failed on {Path(paths[0]).name} and {len(paths) - 1} more files: {type(error).__name__}: {error}"
    )
