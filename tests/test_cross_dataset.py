"""Cross-dataset evaluation: ``training.sources`` trains and validates on some sources,
and the evaluation scores every source, marking which it never trained on."""

from __future__ import annotations

import json

import pytest

from fer_pipeline.data.schema import CLASSES
from fer_pipeline.data.versions import MODEL_INPUT
from fer_pipeline.modelling.config import TrainConfig


def test_sources_are_checked():
    with pytest.raises(ValueError, match="training.sources must be null"):
        TrainConfig(sources=["celeba"])
    with pytest.raises(ValueError, match="training.sources must be null"):
        TrainConfig(sources=[])
    assert TrainConfig(sources=["rafdb"]).sources == ("rafdb",)


def test_training_on_one_source_is_scored_in_and_cross_domain(two_source_splits):
    from fer_pipeline.modelling.distributed import Ranks
    from fer_pipeline.modelling.engine import fit_shards, rank_data
    from fer_pipeline.pipelines.evaluation.nodes import evaluate_model

    train, val, test = two_source_splits
    config = TrainConfig(
        model="fer_resnet18", image_size=32, epochs=1, batch_size=16, warmup_epochs=0,
        device="cpu", sources=["ferplus"],
    )  # fmt: skip
    images, _, val_images, _ = rank_data(train, val, config, Ranks())
    assert (len(images), len(val_images)) == (40, 10)  # FER+ alone, in train and in val

    bundle, _ = fit_shards(train, val, config)
    assert bundle.spec.sources == ["ferplus"]
    report = evaluate_model(bundle, val, test, {"tta": False, "device": "cpu"})[0]
    scores = report["test"]["plain"]
    per_source = scores["per_source"]
    assert {s: f["domain"] for s, f in per_source.items()} == {"ferplus": "in", "rafdb": "cross"}
    for source, figures in per_source.items():
        assert figures["images"] == 10 and set(figures["recall"]) == set(CLASSES)
        assert figures["accuracy"] == pytest.approx(scores["accuracy_per_source"][source])


def test_the_variants_benchmark_trains_each_direction_once(
    two_source_splits, tmp_path, monkeypatch, capsys
):
    """benchmarks/cross_dataset.py as a user runs it, on a scratch project whose splits
    are the real faces above: each variant trained on each source alone, scored in and
    cross domain, written as it goes; run again, it trains nothing."""
    import sys

    from conftest import PROJECT, project_with_splits

    monkeypatch.syspath_prepend(str(PROJECT / "benchmarks"))
    import cross_dataset

    project = project_with_splits(tmp_path / "project", two_source_splits)
    out = tmp_path / "out"
    argv = [
        "cross_dataset.py", "--env", "quick", "--project", str(project), "--out", str(out),
        "--param", "epochs=1", "--param", "image_size=24", "--param", "batch_size=16",
        "--param", "device=cpu", "--variant", "baseline", "--variant", "grey:grayscale=1.0",
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    cross_dataset.main()
    results = json.loads((out / "results.json").read_text())
    assert list(results) == [
        "baseline / ferplus", "baseline / rafdb", "grey / ferplus", "grey / rafdb",
    ]  # fmt: skip
    for key, run in results.items():
        source = key.rsplit(" / ", 1)[1]
        other = {"ferplus": "rafdb", "rafdb": "ferplus"}[source]
        assert run["per_source"][source]["domain"] == "in"
        assert run["per_source"][other]["domain"] == "cross"
        assert run["recipe"]["epochs"] == 1 and run["epochs_run"] == 1
    assert results["grey / rafdb"]["recipe"]["grayscale"] == 1.0
    assert "grayscale" not in results["baseline / rafdb"]["recipe"]
    printed = capsys.readouterr().out
    assert "| grey | rafdb |" in printed and "| ferplus " in printed and "cross macro-F1" in printed

    trained = []

    def train_and_score(recipe, source, *args):
        trained.append(source)
        held = results[f"baseline / {source}"]
        return {k: v for k, v in held.items() if k not in ("recipe", "splits")}

    monkeypatch.setattr(cross_dataset, "train_and_score", train_and_score)
    cross_dataset.main()  # all held: nothing trains
    assert trained == [] and json.loads((out / "results.json").read_text()) == results
    newer = project / MODEL_INPUT / "test/2026-02-01T00.00.00.000Z"  # data_processing ran again
    newer.mkdir()
    (newer / "test").symlink_to(two_source_splits[2].folder)
    monkeypatch.setattr(sys, "argv", [*argv[:-2]])  # baseline alone
    cross_dataset.main()
    assert trained == ["ferplus", "rafdb"]


def test_a_variants_values_may_hold_commas_and_exponents(monkeypatch):
    """``NAME:key=value,...`` splits only where a key follows; numbers stay numbers."""
    import argparse

    from conftest import PROJECT

    monkeypatch.syspath_prepend(str(PROJECT / "benchmarks"))
    from cross_dataset import parse_assignments, parse_variant

    text = "scale=[0.75,1.25],lr=5e-05,model_kwargs={patch_size: 8, depth: 1},precision=bf16"
    assert parse_assignments(text) == {
        "scale": [0.75, 1.25], "lr": 5e-05, "model_kwargs": {"patch_size": 8, "depth": 1},
        "precision": "bf16",
    }  # fmt: skip
    assert parse_variant("wide:scale=[0.7,1.3]") == ("wide", {"scale": [0.7, 1.3]})
    with pytest.raises(argparse.ArgumentTypeError, match="not YAML"):
        parse_assignments("scale=[0.7,")
