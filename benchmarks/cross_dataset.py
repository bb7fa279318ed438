"""Cross-dataset accuracy of variants of a recipe: each variant trained on FER+ alone and
scored on RAF-DB test, and trained on RAF-DB alone and scored on FER+ test, the
literature's check of faces a model never saw (docs/evaluation.md "Cross-dataset
variants").

Reads the newest complete splits of the project (``kedro run --pipelines
data_processing`` writes them) and the recipe of ``--env``, changed by each ``--param`` and
then by the variant; scores plain (no TTA) through the evaluation node. Results go to
``--out``/results.json after every run, so a killed benchmark resumes where it stopped
(a run already held with the same recipe on the same versions of the splits is not
trained again); the table is printed at the end.

    python benchmarks/cross_dataset.py --env cpu --param epochs=4 --param image_size=48
    python benchmarks/cross_dataset.py --variant baseline --variant grey:grayscale=0.5
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import yaml
from _scratch import PROJECT

from fer_pipeline.config.loader import project_config
from fer_pipeline.data.schema import SOURCES, SPLITS
from fer_pipeline.data.shards import Shards
from fer_pipeline.data.versions import latest_split, write_atomically
from fer_pipeline.modelling.config import TrainConfig
from fer_pipeline.modelling.engine import fit_shards
from fer_pipeline.pipelines.evaluation.nodes import evaluate_model

VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "grey 0.5": {"grayscale": 0.5},
    "brightness+contrast 0.3": {"brightness": 0.3, "contrast": 0.3},
    "low resolution 0.3": {"low_resolution": 0.3},
    "erasing 0.25": {"erasing": 0.25},
    "crop jitter (scale 0.75-1.25, shift 0.1)": {"scale": [0.75, 1.25], "translate": 0.1},
    "majority targets": {"soft_targets": False},
    "no label smoothing": {"label_smoothing": 0.0},
    "balance: loss": {"balance": "loss"},
    "balance: none": {"balance": "none"},
}
"""What each variant changes from the recipe; the issue's list: grey/colour, blur,
brightness and contrast, occlusion, crop scale, vote distribution or majority, label
smoothing, class balance."""
COLLAPSING = ("anger", "disgust", "fear")
"""The classes that collapse on unseen faces: their cross-domain recall is shown."""


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value``, the value read as JSON, else as YAML (``scale=[0.8,1.2]``,
    ``soft_targets=false``, ``model_kwargs={patch_size: 8}``; JSON first, so that
    ``5e-05`` is a number, which YAML 1.1 reads as a string)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        pass
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not YAML: {exc}") from exc


def parse_assignments(text: str) -> dict[str, Any]:
    """``key=value,key=value``: split at each comma that a ``key=`` follows, so that a
    value may hold commas (``scale=[0.75,1.25]``)."""
    return dict(parse_assignment(a) for a in re.split(r",(?=\s*[\w.]+=)", text) if a)


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME`` (one of VARIANTS) or ``NAME:key=value,key=value``."""
    name, _, assignments = text.partition(":")
    if not assignments:
        if name not in VARIANTS:
            raise argparse.ArgumentTypeError(
                f"unknown variant {name!r}: one of {sorted(VARIANTS)}, or NAME:key=value,..."
            )
        return name, VARIANTS[name]
    return name, parse_assignments(assignments)


def train_and_score(
    recipe: dict[str, Any],
    source: str,
    splits: dict[str, Shards],
    evaluation: dict[str, Any],
) -> dict[str, Any]:
    """Train ``recipe`` on ``source`` alone; its test figures per source, and seconds."""
    config = TrainConfig.from_dict({**recipe, "sources": [source]})
    train, val, test = (splits[name] for name in SPLITS)
    started = time.perf_counter()
    bundle, history = fit_shards(train, val, config)
    report = evaluate_model(bundle, val, test, {**evaluation, "tta": False})[0]
    return {
        "per_source": report["test"]["plain"]["per_source"],
        "epochs_run": len(history),
        "seconds": round(time.perf_counter() - started, 1),
    }


def save(path: Path, results: dict[str, Any]) -> None:
    """``results`` to ``path`` whole: a killed run leaves the previous file."""
    text = json.dumps(results, indent=1)
    write_atomically(path, lambda temporary: temporary.write_text(text))


def table(results: dict[str, Any]) -> str:
    """Markdown: per variant, direction and unseen source, in-domain and cross-domain
    accuracy, cross-domain macro-F1 and recall of the collapsing classes."""
    lines = [
        "| variant | trained on | in-domain acc | cross acc | cross macro-F1 | "
        + " | ".join(f"cross {c}" for c in COLLAPSING)
        + " |",
        "|---|---|---:|---:|---:|" + "---:|" * len(COLLAPSING),
    ]
    for key, run in results.items():
        variant, source = key.rsplit(" / ", 1)
        figures = run["per_source"]
        inside = f"{100 * figures[source]['accuracy']:.1f}%"
        for other, cross in figures.items():  # a row per source it never saw
            if cross["domain"] != "cross":
                continue
            recall = " | ".join(f"{cross['recall'][c]:.2f}" for c in COLLAPSING)
            lines.append(
                f"| {variant} | {source} | {inside} | {other} {100 * cross['accuracy']:.1f}% "
                f"| {cross['macro_f1']:.3f} | {recall} |"
            )
    return "\n".join(lines)


def recipe_arguments(parser: argparse.ArgumentParser, env: str, out: str) -> None:
    """The flags of a benchmark that trains a recipe on the project's splits."""
    parser.add_argument("--env", default=env, help="Kedro environment of the recipe")
    parser.add_argument(
        "--param", type=parse_assignment, action="append", default=[],
        help="training key=value for every run (e.g. epochs=4)",
    )  # fmt: skip
    parser.add_argument(
        "--evaluation", type=parse_assignment, action="append", default=[],
        help="evaluation key=value (e.g. tta_views=16); default: the environment's",
    )  # fmt: skip
    parser.add_argument("--project", type=Path, default=PROJECT, help="whose splits and conf")
    parser.add_argument("--out", type=Path, default=Path(out))


def recipe_inputs(
    args: argparse.Namespace,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Shards], dict[str, str]]:
    """The recipe of ``--env`` changed by each ``--param``, the evaluation settings, and
    the project's newest splits with their versions; the engine's log (a line per
    epoch) goes to stderr."""
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("fer_pipeline").setLevel(logging.INFO)
    parameters = project_config(args.project, args.env)["parameters"]
    recipe = {**(parameters.get("training") or {}), **dict(args.param)}
    evaluation = {**(parameters.get("evaluation") or {}), **dict(args.evaluation)}
    versions = {name: latest_split(args.project, name) for name in SPLITS}
    splits = {name: Shards(path) for name, path in versions.items()}
    return recipe, evaluation, splits, {name: path.parent.name for name, path in versions.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    recipe_arguments(parser, env="cpu", out="data/cross_dataset")
    parser.add_argument(
        "--variant", type=parse_variant, action="append",
        help=f"NAME of {sorted(VARIANTS)}, or NAME:key=value,...; default: all of them",
    )  # fmt: skip
    parser.add_argument("--sources", nargs="+", default=["ferplus", "rafdb"], choices=SOURCES)
    args = parser.parse_args()

    recipe, evaluation, splits, split_versions = recipe_inputs(args)
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for name, changes in args.variant or list(VARIANTS.items()):
        for source in args.sources:
            key, run_recipe = f"{name} / {source}", {**recipe, **changes}
            held = results.get(key, {})
            wanted = json.loads(json.dumps([run_recipe, split_versions]))  # as JSON holds them
            if [held.get("recipe"), held.get("splits")] == wanted:
                continue  # trained on these splits with this recipe
            print(f"{key}: training", flush=True)
            figures = train_and_score(run_recipe, source, splits, evaluation)
            results[key] = {"recipe": run_recipe, "splits": split_versions, **figures}
            save(results_file, results)
            print(table({key: results[key]}).splitlines()[-1], flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
