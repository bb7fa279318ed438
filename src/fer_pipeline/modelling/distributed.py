"""Training past one process: a rank's view of ``torch.distributed``, and starting the
ranks with torch's elastic launcher, the engine behind ``torchrun``.

A rank joins the process group that torchrun's environment describes (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``): NCCL on GPUs, gloo on
CPUs. One process needs no group, and every helper here is then a no-op.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
import yaml
from torch.distributed import run as torchrun
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

from fer_pipeline.data.shards import Shards
from fer_pipeline.modelling.config import TrainConfig
from fer_pipeline.modelling.distill import teacher_references
from fer_pipeline.modelling.models import ModelBundle
from fer_pipeline.runtime.model_store import MLFLOW_SCHEMES

logger = logging.getLogger(__name__)

WORKER_MODULE = "fer_pipeline.train"
"""The ranks' entry point, the same under ``kedro run`` and under a user's ``torchrun``."""
OUTPUT_MODEL, OUTPUT_HISTORY = "model.safetensors", "history.csv"
"""What rank 0 writes into the worker's ``--out`` folder."""


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes the checkpoint, the model and the history."""
        return self.rank == 0


def init_ranks(device: str) -> Ranks:
    """Joins the process group of torchrun's environment (NCCL when ``device`` resolves
    to CUDA, gloo otherwise); a single process gets ``Ranks()`` and no group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Ranks()
    ranks = Ranks(int(os.environ["RANK"]), world_size, int(os.environ["LOCAL_RANK"]))
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(ranks.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return ranks


def current_ranks() -> Ranks:
    """The ranks of the joined process group, or ``Ranks()`` without one."""
    if not (dist.is_available() and dist.is_initialized()):
        return Ranks()
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def close_ranks() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks, in place."""
    if current_ranks().world_size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_from_main(value: Any, device: torch.device) -> Any:
    """Rank 0's ``value`` (any picklable object) on every rank."""
    if current_ranks().world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
    return box[0]


@contextlib.contextmanager
def _threads_per_rank(nproc: int) -> Iterator[None]:
    """``OMP_NUM_THREADS`` for the ranks: the user's, else this machine's cores shared out
    (torchrun's own default is 1, which leaves CPU ranks short of cores)."""
    before = os.environ.get("OMP_NUM_THREADS")
    if before is None:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS", None)


def launcher_args(config: TrainConfig, worker_args: list[str]) -> list[str]:
    """torchrun's command line for this machine's ranks: ``--standalone`` on one machine;
    with ``nnodes > 1`` a static rendezvous in which this machine is node 0, so that it
    holds rank 0 (docs/distributed.md "Several machines from Kedro")."""
    args = [
        f"--nnodes={config.nnodes}",
        f"--nproc-per-node={config.nproc_per_node}",
        "--max-restarts=0",
    ]
    if config.nnodes == 1:
        args.append("--standalone")
    else:
        args += [
            "--rdzv-backend=static",
            f"--rdzv-endpoint={config.rdzv_endpoint}",
            "--node-rank=0",
        ]
    return [*args, "-m", WORKER_MODULE, *worker_args]


def _failure_message(exc: Exception) -> str:
    """Which rank failed first, and how (its own error when it recorded one)."""
    if not isinstance(exc, ChildFailedError):
        return f"training ranks failed: {exc}"
    rank, failure = exc.get_first_failure()
    if failure.exitcode < 0:
        how = f"was killed by {failure.signal_name()}"
    else:
        how = f"exited with code {failure.exitcode}"
    recorded = failure.error_file_data.get("message")
    others = sorted(set(exc.failures) - {rank})
    return (
        f"training rank {rank} (local rank {failure.local_rank}, pid {failure.pid}) {how}"
        + (f": {failure.message}" if recorded else "")
        + (f"; ranks {others} stopped with it" if others else "")
    )


def launch_fit(
    train: Shards,
    val: Shards,
    config: TrainConfig,
    checkpoint: Path,
    mlflow_run_id: str | None = None,
    tracking_uri: str | None = None,
) -> tuple[ModelBundle, list[dict[str, float]]]:
    """``fit_shards`` in ``nproc_per_node`` ranks on this machine (and those of the other
    ``nnodes``), started by torch's elastic launcher; returns rank 0's model and history.
    With ``mlflow_run_id``, rank 0 logs each epoch's figures to that run as it goes;
    the ranks open MLflow's store at ``tracking_uri`` (for a ``models:/`` teacher too).

    Each rank reads its share of the splits' shards where they are (on several
    machines, a path they all see); the recipe goes to a working folder beside
    ``checkpoint``, removed once the model is back. A rank that fails stops the
    others and raises ``RuntimeError`` naming it; the checkpoint stays for a rerun.
    """
    work = checkpoint.with_suffix(".ranks")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / "params.yml").write_text(yaml.safe_dump({"training": asdict(config)}))
    worker_args = [
        f"--train={train.folder.resolve()}",
        f"--val={val.folder.resolve()}",
        f"--params={work / 'params.yml'}",
        f"--out={work}",
        f"--checkpoint={checkpoint}",
    ]
    teachers = teacher_references(config.teacher)
    if tracking_uri and (mlflow_run_id or any(t.startswith(MLFLOW_SCHEMES) for t in teachers)):
        worker_args.append(f"--mlflow-tracking-uri={tracking_uri}")  # a models:/ teacher too
    if mlflow_run_id:
        worker_args.append(f"--mlflow-run-id={mlflow_run_id}")
    logger.info(
        "Starting %d training ranks on this machine (%d machine(s)) with torchrun's launcher",
        config.nproc_per_node,
        config.nnodes,
    )
    try:
        with _threads_per_rank(config.nproc_per_node):
            torchrun.run(torchrun.parse_args(launcher_args(config, worker_args)))
    except Exception as exc:
        raise RuntimeError(_failure_message(exc)) from exc
    bundle = ModelBundle.load(work / OUTPUT_MODEL)
    history = pd.read_csv(work / OUTPUT_HISTORY).to_dict("records")
    shutil.rmtree(work)
    return bundle, history
