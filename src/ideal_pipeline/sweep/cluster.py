"""The Dask cluster a sweep runs on: a running one at an address, or an embedded one on this machine.

Dask, not a scheduler of our own: it reschedules the tasks of a worker that died on the workers left
(up to `distributed.scheduler.allowed-failures` deaths per task), places a task only on a worker that
offers its resources (`dask worker --resources "CPU=16,GPU=1"`), and has launchers for SSH
(`dask ssh`), Slurm (dask-jobqueue) and Kubernetes (dask-kubernetes). docs/sweeps.md says why Dask
rather than Ray.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ideal_pipeline.errors import UserError


class ClusterError(UserError, RuntimeError):
    """The cluster cannot run this sweep's trials; the message says what to start or change."""


@dataclass
class Cluster:
    client: Any  # distributed.Client
    address: str
    embedded: bool
    slots: int | None  # trials at once (embedded: known; a running cluster: what its workers offer now)


def import_distributed():
    try:
        import distributed
    except ImportError:
        raise ClusterError(
            'the sweep runs on Dask distributed, which is not installed: `pip install -e ".[sweep]"`'
        ) from None
    return distributed


def embedded_slots(resources: dict[str, float], max_parallel: int | None) -> tuple[int, dict[str, float]]:
    """Trials at once on this machine and the resources its one worker offers: as many trials as the cores
    (and GPUs) allow for what each declares, at most `max_parallel`."""
    import torch

    from ideal_pipeline.compute import usable_cores

    cores, gpus = usable_cores(), torch.cuda.device_count()
    cpus, gpu = resources.get("CPU", 1), resources.get("GPU", 0)
    if gpu and gpus < gpu:
        raise ClusterError(f"each trial asks for {gpu} GPU(s) and this machine has {gpus}: run on a GPU machine")
    slots = max(1, int(cores // max(cpus, 1)))
    if gpu:
        slots = min(slots, int(gpus // gpu))
    if max_parallel:
        slots = min(slots, max_parallel)
    offered = {name: amount * slots for name, amount in resources.items()}
    if gpus:
        offered["GPU"] = gpus
    return slots, offered


@contextlib.contextmanager
def connect(
    address: str | None, resources: dict[str, float], max_parallel: int | None = None, wait_for_workers_s: float = 120
) -> Iterator[Cluster]:
    """A client of the cluster at `address`, or of an embedded one started here (stopped at the end)."""
    distributed = import_distributed()
    if address is None:
        slots, offered = embedded_slots(resources, max_parallel)
        # Threads, not processes: a task only starts and watches its `kedro run` subprocess.
        local = distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=slots,
            processes=False,
            resources=offered,
            dashboard_address=None,
            memory_limit=0,  # the trials' memory is their subprocesses', which a worker's limit does not see
        )
        try:
            with distributed.Client(local) as client:
                yield Cluster(client, local.scheduler_address, True, slots)
        finally:
            local.close()
        return
    # A file is a scheduler file (`dask scheduler --scheduler-file`): on a batch system the scheduler's address
    # is known once its job starts.
    scheduler_file = address if Path(address).is_file() else None
    try:
        client = distributed.Client(None if scheduler_file else address, scheduler_file=scheduler_file, timeout=30)
        address = client.scheduler.address
    except (OSError, TimeoutError) as error:
        raise ClusterError(
            f"no Dask scheduler answers at {address} ({error}); start one with `dask scheduler`"
        ) from None
    try:
        yield Cluster(client, address, False, check_resources(client, address, resources, wait_for_workers_s))
    finally:
        client.close()


def check_resources(client, address: str, resources: dict[str, float], wait_s: float) -> int:
    """Refuse a cluster none of whose workers can take a trial (its tasks would wait forever); the number of
    trials its workers can run at once now."""
    try:
        client.wait_for_workers(1, timeout=wait_s)
    except TimeoutError:
        raise ClusterError(
            f"no worker joined the scheduler at {address} within {wait_s:.0f} s: "
            f'start some with `dask worker {address} --nthreads 2 --resources "CPU=2"`'
        ) from None
    try:
        workers = client.scheduler_info(n_workers=-1)["workers"]  # newer versions list 5 workers unless told
    except TypeError:
        workers = client.scheduler_info()["workers"]
    slots = 0
    for info in workers.values():
        offered = info.get("resources") or {}
        fits = [math.floor(offered.get(name, 0) / amount) for name, amount in resources.items() if amount]
        slots += min([info.get("nthreads", 1), *fits])
    if slots == 0:
        offered = sorted({str(info.get("resources") or {}) for info in workers.values()})
        example = ",".join(f"{name}={amount * (2 if name == 'CPU' else 1):g}" for name, amount in resources.items())
        raise ClusterError(
            f"each trial needs {resources}, and no worker at {address} offers that (they offer "
            f"{', '.join(offered)}). Start workers that declare what they have, e.g. "
            f'`dask worker {address} --nthreads 2 --resources "{example}"`'
        )
    return slots
