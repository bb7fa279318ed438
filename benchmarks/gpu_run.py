"""The GPU run in one step: pack the splits here, then train and score on a GPU machine
that has torch, timm, pandas and pyarrow but neither Kedro nor MLflow.

    # here, after `kedro run --pipelines data_processing`:
    python benchmarks/gpu_run.py pack            # -> data/gpu_pack/part-0.parquet, part-1...
    # on the GPU machine (the device tool carries one part per call, 64 MiB each):
    python benchmarks/gpu_run.py run --pack data/gpu_pack --out "$OUT"   # the default recipe

``pack`` writes the latest ``train``, ``val`` and ``test`` splits as they are (encoded
images, labels, sources) into parquet parts of at most ``--part-mib`` MiB, and beside
them ``recipes.json``: the training and evaluation parameters of each Kedro environment,
read here by Kedro's own loader (the GPU machine has no Kedro). ``run``
(a) measures the project's training loop against the reference loop (PIL +
torchvision transforms + DataLoader) with ``train_throughput.py``, and (b) trains the
recipe of a Kedro environment (``--env``: base, the default, is ``TrainConfig``'s
defaults, the best measured; ``gpu`` another name for it; ``vit`` ViT-Tiny from
scratch at 224 px; ``--param key=value`` overrides any key) and prints the test
accuracy per source, plain and with test-time augmentation, macro-F1 and minutes
taken; ``results.json`` in ``--out`` holds them. With ``--teachers N`` it first trains
N models of ``--teacher-env`` (seeds 42, 43, ...; saved as ``teacher-<i>.safetensors``)
and distils the recipe from them (an ensemble when N > 1); ``--teacher FILE`` adds a
teacher trained before. Issue 21's GPU step, both students in one call:

    python benchmarks/gpu_run.py run --out "$OUT/cnn" --teachers 2 && \
    python benchmarks/gpu_run.py run --out "$OUT/vit" --throughput-steps 0 --env vit \
        --param model=deit_tiny_distilled_patch16_224 --teacher "$OUT/cnn/teacher-0.safetensors"
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]  # no install needed there

from fer_pipeline.data.schema import SPLITS, TRAINING_COLUMNS  # noqa: E402
from fer_pipeline.data.shards import Shards, write_shards  # noqa: E402
from fer_pipeline.data.versions import latest_split  # noqa: E402
from fer_pipeline.modelling.config import TrainConfig  # noqa: E402

PACK_COLUMNS = ["split", *TRAINING_COLUMNS]
RECIPES = "recipes.json"
RECIPE_KEYS = ("training", "evaluation")


def environment_parameters(project: Path) -> dict[str, dict]:
    """``{env: {"training": ..., "evaluation": ...}}`` for ``base`` and each environment
    in ``conf/`` but ``local``, as ``kedro run --env ENV`` gets them."""
    from fer_pipeline.config.loader import project_config

    envs = sorted(p.name for p in (project / "conf").iterdir() if p.is_dir() and p.name != "local")
    parameters = {env: project_config(project, env)["parameters"] for env in envs}
    return {env: {k: found.get(k) or {} for k in RECIPE_KEYS} for env, found in parameters.items()}


def pack(project: Path, out: Path, part_mib: float) -> list[Path]:
    """The splits in parquet parts of at most ``part_mib`` MiB of images each, and the
    environments' parameters in ``recipes.json``."""
    frame = pd.concat(
        [Shards(latest_split(project, s)).read(PACK_COLUMNS[1:]).assign(split=s) for s in SPLITS],
        ignore_index=True,
    )[PACK_COLUMNS]
    sizes = frame["image"].map(len).cumsum()
    part_of = (sizes // (part_mib * 2**20)).astype(int)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*.parquet"):
        old.unlink()
    paths = []
    for number, part in frame.groupby(part_of):
        path = out / f"part-{number}.parquet"
        part.to_parquet(path, index=False)
        paths.append(path)
        print(f"{path}: {len(part):,} images, {path.stat().st_size / 2**20:.1f} MiB")
    (out / RECIPES).write_text(json.dumps(environment_parameters(project), indent=2))
    return paths


def _override(config: TrainConfig, pairs: list[str]) -> TrainConfig:
    """``key=value`` pairs (YAML values) over the recipe's defaults."""
    values = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        values[key] = yaml.safe_load(value)
    return TrainConfig.from_dict({**vars(config), **values})


def _env_params(recipes: dict, env: str, name: str) -> dict:
    """The ``name`` parameters of Kedro environment ``env``, as packed."""
    if env not in recipes:
        raise SystemExit(f"no environment {env!r} in {RECIPES}; there are {sorted(recipes)}")
    return recipes[env][name]


def _tta_settings(recipes: dict, env: str) -> dict:
    """The evaluation pipeline's test-time augmentation (one place: its parameters)."""
    from fer_pipeline.pipelines.evaluation.config import EvaluationConfig

    config = EvaluationConfig.model_validate(_env_params(recipes, env, "evaluation"))
    return {"tta_views": config.tta_views, "tta_augment": config.tta_augment.model_dump()}


def _write(out: Path, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))


def run(args: argparse.Namespace) -> dict:
    import train_throughput

    parts = sorted(args.pack.glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"no part-*.parquet in {args.pack}: run `gpu_run.py pack` first")
    recipes = json.loads((args.pack / RECIPES).read_text())
    frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    splits = {s: frame[frame["split"] == s].reset_index(drop=True) for s in SPLITS}
    print({s: len(f) for s, f in splits.items()}, flush=True)
    results: dict = {}
    if args.throughput_steps:
        bench = train_throughput.parser().parse_args(
            [
                f"--image-size={args.throughput_image_size}",
                f"--batch-size={args.throughput_batch_size}",
                f"--steps={args.throughput_steps}",
                f"--precision={args.precision}",
                f"--device={args.device}",
                f"--workers={min(16, os.cpu_count() or 1)}",
                "--rounds=1",
                *(["--compile"] if args.compile else []),
            ]
        )
        train = splits["train"]
        faces = list(train.loc[train["source"] == "rafdb", "image"]) or list(train["image"])
        results["throughput"] = train_throughput.measure(bench, faces)
    if not args.training:
        _write(args.out, results)
        return results

    results["teachers"] = []
    teachers = [str(path) for path in args.teacher]
    for number in range(args.teachers):  # the teachers first, each its own seed
        seed = f"seed={TrainConfig().seed + number}"
        config = _recipe(recipes, args.teacher_env, args, [*args.teacher_param, seed])
        figures, bundle = train_and_score(splits, config, _tta_settings(recipes, args.teacher_env))
        path = args.out / f"teacher-{number}.safetensors"
        args.out.mkdir(parents=True, exist_ok=True)
        bundle.save(path)
        results["teachers"].append({"path": str(path), **figures})
        teachers.append(str(path))
    extra = (
        [f"teacher={json.dumps(teachers if len(teachers) > 1 else teachers[0])}"]
        if teachers
        else []
    )
    config = _recipe(recipes, args.env, args, [*args.param, *extra])
    figures, bundle = train_and_score(splits, config, _tta_settings(recipes, args.env))
    results["training"] = figures
    _write(args.out, results)
    if args.save_model:
        bundle.save(args.out / "model.safetensors")
    return results


def _recipe(recipes: dict, env: str, args: argparse.Namespace, pairs: list[str]) -> TrainConfig:
    """An environment's recipe on this run's device, with ``key=value`` overrides."""
    recipe = _env_params(recipes, env, "training")
    run = {"device": args.device, "precision": args.precision, "compile": args.compile}
    return _override(TrainConfig.from_dict({**recipe, **run}), pairs)


def train_and_score(splits: dict, config: TrainConfig, tta: dict) -> tuple[dict, object]:
    """Train ``config`` on the packed train and val, score test plain and with TTA;
    returns the figures and the model."""
    from fer_pipeline.modelling.engine import fit_shards
    from fer_pipeline.modelling.evaluate import predict_proba
    from fer_pipeline.modelling.metrics import macro_f1
    from fer_pipeline.modelling.tensors import images_to_tensor

    started = time.perf_counter()
    test = splits["test"]
    with tempfile.TemporaryDirectory(prefix="fer-gpu-run-") as tmp:
        for name in ("train", "val"):
            write_shards([splits[name]], Path(tmp) / name, row_group_rows=1024)
        bundle, history = fit_shards(Shards(Path(tmp) / "train"), Shards(Path(tmp) / "val"), config)
    trained = time.perf_counter() - started
    plain, averaged = predict_proba(
        bundle,
        images_to_tensor(list(test["image"]), config.image_size, desc="decode test"),
        device=config.device,
        precision=config.precision,
        tta_views=tta["tta_views"],
        tta_augment=tta["tta_augment"],
        seed=config.seed,
    )
    labels = test["label"].to_numpy()
    scores = {}
    for kind, probs in (("plain", plain), ("tta", averaged)):
        predicted = probs.argmax(1)
        scores[kind] = {
            "accuracy": float((predicted == labels).mean()),
            "macro_f1": macro_f1(labels, predicted, 7),
            **{
                f"accuracy_{source}": float((predicted[rows] == labels[rows]).mean())
                for source, rows in test.groupby("source").indices.items()
            },
        }
    figures = {
        "recipe": vars(config),
        "teacher": bundle.spec.teacher,
        "train_images": bundle.spec.train_images,
        "epochs": len(history),
        "best_epoch": bundle.spec.best_epoch,
        "val_accuracy": bundle.spec.val_accuracy,
        "temperature": bundle.spec.temperature,
        "images_per_second": max(row["images_per_second"] for row in history),
        "minutes_training": trained / 60,
        "minutes_total": (time.perf_counter() - started) / 60,
        "test": scores,
    }
    print(f"{config.model} at {config.image_size} px, teacher {config.teacher}:")
    for kind, values in scores.items():
        print(f"  test {kind:5s} " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    print(f"  trained in {trained / 60:.1f} min ({len(history)} epochs)", flush=True)
    return figures, bundle


def main(argv: list[str] | None = None) -> dict | list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="write the splits as parquet parts")
    packing.add_argument("--project", type=Path, default=ROOT)
    packing.add_argument("--out", type=Path, default=ROOT / "data/gpu_pack")
    packing.add_argument("--part-mib", type=float, default=56, help="images per part, MiB")
    running = commands.add_parser("run", help="throughput, then train and score")
    running.add_argument("--pack", type=Path, default=ROOT / "data/gpu_pack")
    running.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "data/gpu_run")))
    running.add_argument("--device", default="auto")
    running.add_argument("--precision", default="auto", help="auto: bf16 on a GPU")
    running.add_argument("--compile", action="store_true", help="torch.compile both runs")
    running.add_argument(
        "--env", default="base", help="the Kedro environment whose recipe trains (conf/ENV)"
    )
    running.add_argument("--param", action="append", default=[], help="recipe key=value")
    running.add_argument("--throughput-steps", type=int, default=200, help="0: skip (a)")
    running.add_argument("--throughput-image-size", type=int, default=224)
    running.add_argument("--throughput-batch-size", type=int, default=256)
    running.add_argument(
        "--training",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="(b); --no-training: only (a), e.g. with the first part while the next travels",
    )
    running.add_argument("--save-model", action="store_true", help="also write the model")
    running.add_argument(
        "--teachers", type=int, default=0, help="train this many teachers first (distillation)"
    )
    running.add_argument("--teacher-env", default="base", help="the teachers' recipe (conf/ENV)")
    running.add_argument(
        "--teacher-param", action="append", default=[], help="teachers' recipe key=value"
    )
    running.add_argument(
        "--teacher", type=Path, action="append", default=[], help="a trained teacher's file"
    )
    args = parser.parse_args(argv)
    if args.command == "pack":
        return pack(args.project, args.out, args.part_mib)
    return run(args)


if __name__ == "__main__":
    main()
