"""The training step without Kedro, in one process or in every rank under ``torchrun``.

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 --rdzv-id fer1 -m fer_pipeline.train \\
        --train train/ --val val/ --params params.yml --out run/

``--train`` / ``--val``: split shards as the pipeline writes them (folders of
``part-*.parquet`` with ``image``, ``label``, ``soft_label``, ``source``), of which each
rank decodes only its share; ``--params``: a YAML file of ``TrainConfig`` keys, at its
top level or under ``training:`` (``conf/<env>/parameters_training.yml`` works as it
is). Rank 0 writes ``model.safetensors`` and ``history.csv`` into ``--out`` (each
atomically) and, after every epoch, the checkpoint (default ``--out/checkpoint.pt``)
from which the same command resumes. ``kedro run`` with ``training.nproc_per_node > 1``
starts this module in its ranks. It needs torch, timm, pandas and pyarrow, not Kedro.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import pandas as pd
import yaml
from torch.distributed.elastic.multiprocessing.errors import record

from fer_pipeline.data.schema import TRAINING_COLUMNS
from fer_pipeline.data.shards import Shards
from fer_pipeline.data.versions import write_atomically
from fer_pipeline.modelling.config import TrainConfig
from fer_pipeline.modelling.distributed import (
    OUTPUT_HISTORY,
    OUTPUT_MODEL,
    close_ranks,
    init_ranks,
)
from fer_pipeline.modelling.engine import fit_shards

logger = logging.getLogger("fer_pipeline.train")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True, help="training split (shards)")
    parser.add_argument("--val", type=Path, required=True, help="validation split (shards)")
    parser.add_argument("--params", type=Path, help="YAML of training parameters")
    parser.add_argument("--out", type=Path, required=True, help="folder for the outputs")
    parser.add_argument("--checkpoint", type=Path, help="default: OUT/checkpoint.pt")
    parser.add_argument("--mlflow-run-id", help="rank 0 logs each epoch's figures to this run")
    parser.add_argument(
        "--mlflow-tracking-uri",
        help="for the run and a models:/ teacher; default: MLflow's own (environment)",
    )
    return parser


def read_params(path: Path | None) -> TrainConfig:
    """The recipe of a YAML file (``TrainConfig`` keys, optionally under ``training:``)."""
    if path is None:
        return TrainConfig()
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of training parameters")
    values = values.get("training", values)
    try:
        return TrainConfig.from_dict(values)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def read_split(path: Path) -> Shards:
    """A split's shards (a folder of ``part-*.parquet``), checked for the columns
    training reads."""
    if not path.is_dir():
        raise FileNotFoundError(f"split folder not found: {path}")
    shards = Shards(path)
    missing = sorted(set(TRAINING_COLUMNS) - set(shards.columns))
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    return shards


def _epoch_logger(args: argparse.Namespace):
    """Live MLflow metrics when a run is named; a named tracking URI is set first (a
    ``models:/`` teacher is read from it too). MLflow is imported only then: the entry
    point runs without it."""
    if args.mlflow_tracking_uri:
        import mlflow

        mlflow.set_tracking_uri(args.mlflow_tracking_uri)
    if not args.mlflow_run_id:
        return None
    from fer_pipeline.tracking.runs import EpochMetricsLogger

    return EpochMetricsLogger(args.mlflow_run_id)


@record  # a failing rank's traceback reaches the launcher's error report
def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    config = read_params(args.params)
    ranks = init_ranks(config.device)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s [rank {ranks.rank}/{ranks.world_size}] %(name)s: %(message)s",
    )
    logger.info(
        "rank %d of %d (local rank %d, pid %d): %s at %d px, batch %d per rank",
        ranks.rank,
        ranks.world_size,
        ranks.local_rank,
        os.getpid(),
        config.model,
        config.image_size,
        config.batch_size,
    )
    try:
        train, val = read_split(args.train), read_split(args.val)
        checkpoint = args.checkpoint or args.out / "checkpoint.pt"
        bundle, history = fit_shards(train, val, config, checkpoint, _epoch_logger(args))
        if ranks.main:
            args.out.mkdir(parents=True, exist_ok=True)
            write_atomically(args.out / OUTPUT_MODEL, bundle.save)
            write_atomically(
                args.out / OUTPUT_HISTORY, lambda p: pd.DataFrame(history).to_csv(p, index=False)
            )
            logger.info("model and history written to %s", args.out)
    finally:
        close_ranks()


if __name__ == "__main__":
    main()
