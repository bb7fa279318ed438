"""The environments' parameters as Kedro merges them (conf/base, then one environment,
nested keys merged): each builds a valid recipe, the default run is TrainConfig's
defaults, and what conf/cpu and conf/gpu both state (Kedro has no environment built on
another) stays the same in both."""

from __future__ import annotations

from functools import cache

import pytest
from conftest import PROJECT
from kedro.config import OmegaConfigLoader

from fer_pipeline.modelling.config import TrainConfig
from fer_pipeline.pipelines.evaluation.config import EvaluationConfig
from fer_pipeline.settings import CONFIG_LOADER_ARGS

ENVIRONMENTS = ("base", "quick", "cpu", "gpu")
CNN_RECIPE = (  # the keys conf/cpu and conf/gpu share
    "model",
    "lr",
    "min_lr",
    "scale",
    "mix_prob",
    "balance_power",
    "soft_targets",
    "ema_decay",
)
HARMONISATION = ("ferplus", "rafdb", "affectnet")


@cache
def parameters(env: str) -> dict:
    """What ``kedro run --env ENV`` gets (``base``: ``kedro run`` without conf/local)."""
    return OmegaConfigLoader(str(PROJECT / "conf"), env=env, **CONFIG_LOADER_ARGS)["parameters"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_environment_builds_its_recipe(env):
    config = TrainConfig.from_dict(parameters(env)["training"])
    EvaluationConfig.model_validate(parameters(env)["evaluation"])
    assert (config.model == "fer_resnet18") == (env != "base")


def test_the_default_run_is_the_recipes_defaults():
    assert TrainConfig.from_dict(parameters("base")["training"]) == TrainConfig()
    assert parameters("base")["ferplus"]["labels"]["vote_policy"] == "majority"


def test_cpu_and_gpu_share_the_cnn_recipe_and_the_labels():
    cpu, gpu = parameters("cpu"), parameters("gpu")
    for key in CNN_RECIPE:
        assert cpu["training"][key] == gpu["training"][key], key
    assert {k: cpu[k] for k in HARMONISATION} == {k: gpu[k] for k in HARMONISATION}
    assert cpu["ferplus"]["labels"]["vote_policy"] == "probability"
    assert cpu["training"]["soft_targets"]  # the vote distributions are the targets


def test_an_environment_merges_into_base_key_by_key():
    """``merge_strategy: {parameters: soft}``: conf/cpu's three FER+ lines keep base's
    label maps, and its training keys keep base's seed."""
    base, cpu = parameters("base"), parameters("cpu")
    assert cpu["ferplus"]["labels"]["label_map"] == base["ferplus"]["labels"]["label_map"]
    assert cpu["training"]["seed"] == base["training"]["seed"]
