"""The environments' parameters as Kedro merges them (conf/base, then one environment,
nested keys merged): each builds a valid recipe; each trains the recipe that the
README's and docs/recipes.md's tables say it trains, and the README lists every one;
the default run is TrainConfig's defaults; and an environment names only what it
changes (Kedro has no environment built on another, so none repeats a value it gets
anyway)."""

from __future__ import annotations

import re
from dataclasses import asdict
from functools import cache
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT
from kedro.config import OmegaConfigLoader

from fer_pipeline.modelling.config import TrainConfig
from fer_pipeline.pipelines.evaluation.config import EvaluationConfig
from fer_pipeline.settings import CONFIG_LOADER_ARGS

ENVIRONMENTS = sorted({p.name for p in (PROJECT / "conf").iterdir() if p.is_dir()} - {"local"})
# A table row: `kedro run` or `kedro run --env NAME`, then a cell "`model`, N px, M epochs, labels"
ROW = re.compile(
    r"^\|.*?`kedro run(?: --env (?P<env>\w+))?`[^|]*\|.*?"
    r"`(?P<model>[\w.]+)`, (?P<size>\d+) px, (?P<epochs>\d+) epochs, "
    r"(?P<labels>vote distribution|majority labels)",
    re.MULTILINE,
)
LABELS = {"vote distribution": ("probability", True), "majority labels": ("majority", False)}


@cache
def parameters(env: str) -> dict:
    """What ``kedro run --env ENV`` gets (``base``: ``kedro run`` without conf/local)."""
    return OmegaConfigLoader(str(PROJECT / "conf"), env=env, **CONFIG_LOADER_ARGS)["parameters"]


def resolved(env: str) -> dict:
    """``parameters(env)`` with the training and evaluation keys as their classes fill
    and normalise them (defaults included)."""
    params = parameters(env)
    return {
        **params,
        "training": asdict(TrainConfig.from_dict(params["training"])),
        "evaluation": EvaluationConfig.model_validate(params["evaluation"]).model_dump(),
    }


def claimed_recipes(path: Path) -> dict[str, dict]:
    """The recipe each `kedro run [--env NAME]` row of a Markdown table claims."""
    return {
        m["env"] or "base": {
            "model": m["model"],
            "image_size": int(m["size"]),
            "epochs": int(m["epochs"]),
            "labels": LABELS[m["labels"]],
        }
        for m in ROW.finditer(path.read_text())
    }


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_environment_builds_its_recipe(env):
    TrainConfig.from_dict(parameters(env)["training"])
    EvaluationConfig.model_validate(parameters(env)["evaluation"])


def test_the_default_run_is_the_recipes_defaults():
    assert TrainConfig.from_dict(parameters("base")["training"]) == TrainConfig()
    assert parameters("base")["ferplus"]["labels"]["vote_policy"] == "probability"
    assert TrainConfig().soft_targets  # the vote distributions are the targets


def test_gpu_is_another_name_for_the_default():
    assert not list((PROJECT / "conf/gpu").glob("*.yml"))
    assert parameters("gpu") == parameters("base")


@pytest.mark.parametrize("doc", ["README.md", "docs/recipes.md"])
def test_each_environment_trains_what_the_docs_say(doc):
    claims = claimed_recipes(PROJECT / doc)
    assert set(claims) == set(ENVIRONMENTS) - {"gpu"}, doc  # gpu: the default's row
    for env, claim in claims.items():
        config = TrainConfig.from_dict(parameters(env)["training"])
        policy = parameters(env)["ferplus"]["labels"]["vote_policy"]
        assert config.model == claim["model"], env
        assert config.image_size == claim["image_size"], env
        assert config.epochs == claim["epochs"], env
        assert (policy, config.soft_targets) == claim["labels"], env


def test_the_readme_names_every_environment():
    table = (PROJECT / "README.md").read_text().split("## Environments")[1].split("\n## ")[0]
    for env in set(ENVIRONMENTS) - {"base"}:
        assert re.search(rf"`(kedro run )?--env {env}`", table), env


@pytest.mark.parametrize("env", sorted(set(ENVIRONMENTS) - {"base"}))
def test_an_environment_names_only_what_it_changes(env):
    """Every value an environment's files set differs from what the default run gets
    (conf/base and the classes' defaults): no environment repeats another's recipe."""
    default, ours = resolved("base"), resolved(env)

    def leaves(tree: dict, path: tuple = ()):
        for key, value in tree.items():
            if isinstance(value, dict) and value:
                yield from leaves(value, (*path, key))
            else:
                yield (*path, key)

    def at(tree: dict, path: tuple):
        for key in path:
            tree = tree[key]
        return tree

    for file in sorted((PROJECT / "conf" / env).glob("*.yml")):
        for path in leaves(yaml.safe_load(file.read_text())):
            assert at(ours, path) != at(default, path), f"{file.name}: {'.'.join(path)}"


def test_an_environment_merges_into_base_key_by_key():
    """``merge_strategy: {parameters: soft}``: conf/quick's FER+ vote policy keeps base's
    label maps, and its training keys keep base's seed."""
    base, quick = parameters("base"), parameters("quick")
    assert quick["ferplus"]["labels"]["label_map"] == base["ferplus"]["labels"]["label_map"]
    assert quick["ferplus"]["labels"]["vote_policy"] == "majority"
    assert quick["training"]["seed"] == base["training"]["seed"]
