"""A training run killed with SIGKILL resumes from its last checkpoint and ends with the
same epochs, and the same weights, as a run that was never interrupted; the Kedro node
finds its checkpoint again when only run settings changed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import torch
from conftest import VIT_RECIPE

from fer_pipeline.modelling.config import TrainConfig
from fer_pipeline.modelling.engine import fit

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import torch
    from fer_pipeline.modelling.config import TrainConfig
    from fer_pipeline.modelling.engine import fit
    data = torch.load(sys.argv[1])
    fit(*data["args"], TrainConfig(**data["config"]), checkpoint=Path(sys.argv[2]))
    """
)


def _data(shared: Path, n: int = 384, size: int = 32):
    from conftest import write_ferplus_subset

    from fer_pipeline.data.images import encode_png
    from fer_pipeline.datasets import FerPlusRelease
    from fer_pipeline.modelling.tensors import images_to_tensor

    root = write_ferplus_subset(shared, Path(os.environ["RESUME_TMP"]) / "ferplus", rows=n)
    table = FerPlusRelease(str(root)).load().table
    images = images_to_tensor([encode_png(pixels) for pixels in table["pixels"]], size)
    labels = torch.from_numpy(table["label_orig"].to_numpy() % 7)
    targets = torch.eye(7)[labels]
    return images[:320], targets[:320], images[320:], labels[320:]


CONFIG = {  # a tiny ViT-Tiny, as this test was written for
    **VIT_RECIPE,
    "image_size": 32,
    "epochs": 6,
    "batch_size": 32,
    "warmup_epochs": 1,
    "lr": 1e-3,
    "mix_prob": 0.5,
    "ema_decay": 0.9,
    "device": "cpu",
    "seed": 3,
}


def test_resume_after_kill(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("RESUME_TMP", str(tmp_path))
    args = _data(shared_data)
    data, checkpoint = tmp_path / "data.pt", tmp_path / "ckpt" / "run.pt"
    torch.save({"args": args, "config": CONFIG}, data)
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(data), str(checkpoint)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if checkpoint.exists() and torch.load(checkpoint, weights_only=True)["epoch"] >= 2:
            break
        time.sleep(0.2)
    assert process.poll() is None, "training ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 2 <= killed_at < CONFIG["epochs"]

    resumed, history = fit(*args, TrainConfig(**CONFIG), checkpoint=checkpoint)
    assert [row["epoch"] for row in history] == list(range(1, CONFIG["epochs"] + 1))
    assert resumed.spec.epochs == CONFIG["epochs"]

    straight, straight_history = fit(*args, TrainConfig(**CONFIG))
    assert [r["val_accuracy"] for r in history] == [r["val_accuracy"] for r in straight_history]
    for name, tensor in straight.state_dict.items():
        torch.testing.assert_close(resumed.state_dict[name], tensor, msg=name)


def test_corrupt_checkpoint_is_set_aside_and_the_run_starts_over(
    shared_data, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("RESUME_TMP", str(tmp_path))
    images, targets, val_images, val_labels = _data(shared_data)
    checkpoint = tmp_path / "ckpt" / "run.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"half a checkpoint, cut off by a full disk")
    config = TrainConfig(**{**CONFIG, "epochs": 2})
    with caplog.at_level("WARNING"):
        bundle, history = fit(images[:64], targets[:64], val_images, val_labels, config, checkpoint)
    assert "unreadable" in caplog.text and checkpoint.with_suffix(".corrupt").exists()
    assert [row["epoch"] for row in history] == [1, 2] and bundle.spec.epochs == 2
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2  # a fresh one


def test_the_node_resumes_after_the_checkpoints_moved_and_run_settings_changed(
    small_raw, tmp_path, kedro_run
):
    """Moving the checkpoint to another ``checkpoint_dir`` and changing run settings
    (``channels_last``, ``eval_batch_size``) keeps the checkpoint's name: the node
    resumes from it, trains no epoch again and returns the same history."""
    from conftest import catalog_of, make_project

    from fer_pipeline.pipelines.training.nodes import train_model

    project = make_project(tmp_path / "project", small_raw)
    kedro_run(project, "data_processing")
    catalog = catalog_of(project)
    train, val = catalog.load("train"), catalog.load("val")
    config = TrainConfig(
        **{**CONFIG, "epochs": 2, "mix_prob": 0.0},
        checkpoint_dir=str(tmp_path / "first"),
    )
    _, history, path = train_model(train, val, config)
    moved = tmp_path / "second" / Path(path).name
    moved.parent.mkdir()
    Path(path).rename(moved)

    written = moved.stat().st_mtime_ns

    run_settings = {"checkpoint_dir": str(moved.parent), "channels_last": False}
    again = replace(config, **run_settings, eval_batch_size=16)
    _, resumed, resumed_path = train_model(train, val, again)
    assert Path(resumed_path) == moved
    assert moved.stat().st_mtime_ns == written  # no epoch trained, so none saved again
    assert resumed.equals(history)
