"""Students with and without a teacher on one budget, side by side: each variant of a
recipe trained on all the sources and scored on test, plain and with TTA, per source
(docs/training.md "Distillation, measured").

Reads the newest complete splits of the project and the recipe of ``--env``, changed by
each ``--param`` and then by the variant (``NAME:key=value,...``). With
``--side-by-side`` the variants train at once, each in a process of its own with an equal
share of the cores, so that they meet the same machine (this shared machine's speed
drifts by 20% within an hour: a ratio measured side by side holds, two absolute times
measured apart do not). Each run's figures go to ``--out``/<variant>.json when it ends;
a variant held with the same recipe on the same versions of the splits is not trained
again. The table is printed at the end.

    python benchmarks/distillation.py --env vit --side-by-side \\
        --param image_size=48 --param "model_kwargs={patch_size: 8}" --param epochs=6 \\
        --variant "undistilled" \\
        --variant "distilled:model=deit_tiny_distilled_patch16_224,teacher=data/06_models"
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

import torch
from cross_dataset import parse_assignments, recipe_arguments, recipe_inputs, save

from fer_pipeline.data.schema import SPLITS
from fer_pipeline.data.shards import Shards
from fer_pipeline.modelling.config import TrainConfig
from fer_pipeline.modelling.engine import fit_shards
from fer_pipeline.pipelines.evaluation.nodes import evaluate_model


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME`` (the recipe as it is) or ``NAME:key=value,key=value``."""
    name, _, assignments = text.partition(":")
    if not re.fullmatch(r"[\w.-]+", name):
        raise argparse.ArgumentTypeError(f"a variant's name is letters, digits, - . _: {name!r}")
    return name, parse_assignments(assignments)


def train_and_score(
    recipe: dict[str, Any], splits: dict[str, Shards], evaluation: dict[str, Any]
) -> dict[str, Any]:
    """Train ``recipe`` on every source; its test figures and its time."""
    config = TrainConfig.from_dict(recipe)
    train, val, test = (splits[name] for name in SPLITS)
    started = time.perf_counter()
    bundle, history = fit_shards(train, val, config)
    trained = time.perf_counter() - started
    report = evaluate_model(bundle, val, test, evaluation)[0]
    figures = {}
    for kind, scores in report["test"].items():  # plain, tta
        figures[kind] = {
            "accuracy": scores["accuracy"],
            "macro_f1": scores["macro_f1"],
            "ece": scores["ece"],
            **{f"{s} accuracy": f["accuracy"] for s, f in scores["per_source"].items()},
        }
    return {
        "test": figures,
        "epochs_run": len(history),
        "best_epoch": max(range(len(history)), key=lambda i: history[i][config.monitor]) + 1,
        "training_seconds": round(trained, 1),
        "images_per_second": round(sum(r["images_per_second"] for r in history) / len(history), 1),
        "teacher": bundle.spec.teacher,
    }


def table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown: a row per variant, test accuracy per source plain (TTA), macro-F1, time."""
    sources = sorted({k.split(" ")[0] for r in results.values() for k in r["test"]["plain"]})
    sources = [s for s in sources if s not in ("accuracy", "macro_f1", "ece")]
    lines = [
        "| variant | threads | epochs | training | images/s | "
        + " | ".join(f"{s} test (TTA)" for s in sources)
        + " | test macro-F1 (TTA) | ECE (TTA) |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(sources) + "---:|---:|",
    ]
    for name, run in results.items():
        plain, tta = run["test"]["plain"], run["test"].get("tta", run["test"]["plain"])
        accuracy = " | ".join(
            f"{100 * plain[f'{s} accuracy']:.1f}% ({100 * tta[f'{s} accuracy']:.1f}%)"
            for s in sources
        )
        lines.append(
            f"| {name} | {run['threads']} | {run['epochs_run']} | "
            f"{run['training_seconds'] / 60:.1f} min | {run['images_per_second']:.0f} | "
            f"{accuracy} | {plain['macro_f1']:.3f} ({tta['macro_f1']:.3f}) | "
            f"{plain['ece']:.3f} ({tta['ece']:.3f}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    recipe_arguments(parser, env="vit", out="data/distillation")
    parser.add_argument("--variant", type=parse_variant, action="append", required=True)
    parser.add_argument(
        "--side-by-side", action="store_true",
        help="train the variants at once, each with an equal share of the cores",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="cores in all")
    args = parser.parse_args()

    if args.side_by_side and len(args.variant) > 1:
        share = max(args.threads // len(args.variant), 1)
        common = ["--env", args.env, "--project", str(args.project), "--out", str(args.out)]
        for flag, assignments in (("--param", args.param), ("--evaluation", args.evaluation)):
            for key, value in assignments:
                common += [flag, f"{key}={json.dumps(value)}"]  # JSON is YAML
        children = []
        for name, changes in args.variant:  # its changes as the last --params
            own = [f"--param={key}={json.dumps(value)}" for key, value in changes.items()]
            command = [__file__, *common, *own, "--threads", str(share), "--variant", name]
            threads = {**os.environ, "OMP_NUM_THREADS": str(share)}
            children.append(subprocess.Popen([sys.executable, *command], env=threads))
        if any([child.wait() for child in children]):  # each to its end
            sys.exit("a variant failed: see its output above")
    else:
        torch.set_num_threads(args.threads)
        recipe, evaluation, splits, split_versions = recipe_inputs(args)
        for name, changes in args.variant:
            path = args.out / f"{name}.json"
            run_recipe = {**recipe, **changes}
            held = json.loads(path.read_text()) if path.exists() else {}
            wanted = json.loads(json.dumps([run_recipe, split_versions, evaluation]))
            if [held.get("recipe"), held.get("splits"), held.get("evaluation")] == wanted:
                continue  # trained on these splits with this recipe
            print(f"{name}: training with {args.threads} threads", flush=True)
            figures = train_and_score(run_recipe, splits, evaluation)
            run = {"recipe": run_recipe, "splits": split_versions, "evaluation": evaluation}
            save(path, run | {"threads": args.threads} | figures)
    results = {p.stem: json.loads(p.read_text()) for p in sorted(args.out.glob("*.json"))}
    names = [name for name, _ in args.variant]
    print(table({name: results[name] for name in names if name in results}))


if __name__ == "__main__":
    main()
