"""The training recipe against the run settings: only the recipe keys the resume
checkpoint, so moving the checkpoints or changing the device still resumes."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest

from fer_pipeline.modelling.config import RUN_FIELDS, TrainConfig
from fer_pipeline.pipelines.training.nodes import resume_key

IMAGES = ["a1b2", "c3d4", "e5f6"]  # pixel hashes of the training images
BASE = TrainConfig(model="fer_resnet18", image_size=40, epochs=4, warmup_epochs=1)


def test_run_fields_are_fields():
    assert {f.name for f in fields(TrainConfig)} >= RUN_FIELDS


@pytest.mark.parametrize(
    "change",
    [
        {"checkpoint_dir": "/elsewhere/checkpoints"},
        {"compile": True},
        {"device": "cuda:1"},
        {"channels_last": False},
        {"data_on_device": False},
        {"eval_batch_size": 32},
        {"decoded_memory_gb": 0.5},
    ],
)
def test_run_settings_keep_the_key(change):
    assert resume_key(replace(BASE, **change), IMAGES) == resume_key(BASE, IMAGES)


def test_two_ranks_on_one_machine_or_on_two_have_the_same_key():
    one_machine = replace(BASE, nproc_per_node=2)
    two_machines = replace(BASE, nnodes=2, rdzv_endpoint="node0:29500")
    assert resume_key(one_machine, IMAGES) == resume_key(two_machines, IMAGES)


@pytest.mark.parametrize(
    "change",
    [
        {"lr": 1e-3},
        {"epochs": 5},
        {"batch_size": 32},
        {"image_size": 48},
        {"mix_prob": 0.0},
        {"seed": 7},
        {"precision": "bf16"},
        {"storage_size": 32},
        {"label_qualities": ["manual"]},
        {"nproc_per_node": 2},  # the global batch doubles
        {"distillation": "soft"},
        {"distillation_alpha": 0.3},
        {"distillation_tau": 2.0},
    ],
)
def test_recipe_changes_change_the_key(change):
    assert resume_key(replace(BASE, **change), IMAGES) != resume_key(BASE, IMAGES)


def test_other_training_images_change_the_key():
    assert resume_key(BASE, IMAGES[:2]) != resume_key(BASE, IMAGES)
    assert resume_key(BASE, IMAGES[::-1]) != resume_key(BASE, IMAGES)


def test_the_recipe_names_every_field_but_the_run_settings():
    recipe = BASE.recipe()
    assert set(recipe) == {f.name for f in fields(TrainConfig)} - RUN_FIELDS | {"world_size"}
    assert recipe["lr"] == BASE.lr and recipe["world_size"] == 1
