"""Training in several processes (DDP, gloo on the CPU): each rank decodes its own share
of the shards, `kedro run` and `torchrun` starting the ranks, a killed rank, and images
stored below the model's size."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import catalog_of, make_project

from fer_pipeline.data.shards import Shards, write_shards
from fer_pipeline.modelling.config import TrainConfig
from fer_pipeline.modelling.distributed import Ranks
from fer_pipeline.modelling.engine import fit_shards, rank_data, rank_rows
from fer_pipeline.modelling.evaluate import predict_proba
from fer_pipeline.modelling.models import ModelBundle
from fer_pipeline.modelling.tensors import StreamedImages, encoded_gb, shards_to_tensor

NO_AUGMENTATION = {
    "hflip": 0.0,
    "rotation": 0.0,
    "scale": [1.0, 1.0],
    "translate": 0.0,
    "mix_prob": 0.0,
    "ema_decay": 0.0,
}
TINY_VIT = {  # no BatchNorm, no dropout: deterministic
    "model": "vit_tiny_patch16_224",
    "model_kwargs": {"depth": 2, "patch_size": 8},
    "image_size": 32,
    "device": "cpu",
    "precision": "fp32",
    "warmup_epochs": 0,
    "seed": 5,
}


@pytest.fixture(scope="module")
def split_tables(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    """Train (96) and val (24) shards of real RAF-DB faces, in the pipeline's split
    layout (train in two shards)."""
    root = tmp_path_factory.mktemp("splits")
    lines = (shared_data / "rafdb/basic/EmoLabel/list_patition_label.txt").read_text().split("\n")
    rows = []
    with zipfile.ZipFile(shared_data / "rafdb/basic/Image/aligned.zip") as archive:
        for line in lines[:120]:
            name, label = line.split()
            member = f"aligned/{name.removesuffix('.jpg')}_aligned.jpg"
            soft = np.eye(7, dtype=np.float32)[int(label) - 1]
            rows.append((archive.read(member), int(label) - 1, soft, "rafdb"))
    frame = pd.DataFrame(rows, columns=["image", "label", "soft_label", "source"])
    write_shards([frame.iloc[:50], frame.iloc[50:96]], root / "train", row_group_rows=16)
    write_shards([frame.iloc[96:]], root / "val", row_group_rows=16)
    return root / "train", root / "val"


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={nproc}", "-m", "fer_pipeline.train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_rank_rows_are_equal_disjoint_seeded_shares():
    shares = [rank_rows(101, 3, Ranks(rank=r, world_size=4)) for r in range(4)]
    assert [len(s) for s in shares] == [25] * 4
    assert len(set(np.concatenate(shares))) == 100
    assert all((np.diff(s) > 0).all() for s in shares)  # sorted: read shard by shard
    assert (rank_rows(101, 3, Ranks(rank=1, world_size=4)) == shares[1]).all()
    assert not (rank_rows(101, 4, Ranks(rank=1, world_size=4)) == shares[1]).all()
    assert (rank_rows(7, 3, Ranks()) == np.arange(7)).all()


def test_two_ranks_decode_half_each_and_report_the_whole_val_set(split_tables, tmp_path):
    """2 ranks x 8 images: each rank decodes only its share (48 of 96 training images,
    12 of 24 validation images); torchrun's outputs are the model, history, checkpoint;
    the validation figures, summed over the ranks' shares, are those of the whole set
    scored in one process."""
    train, val = split_tables
    recipe = {**TINY_VIT, **NO_AUGMENTATION, "epochs": 1}
    params = tmp_path / "params.yml"
    params.write_text(yaml.safe_dump({"training": {**recipe, "batch_size": 8}}))
    out = tmp_path / "run"
    result = torchrun(f"--train={train}", f"--val={val}", f"--params={params}", f"--out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        assert f"[rank {rank}/2]" in result.stderr
    assert result.stderr.count("decodes 48 of 96 training images and 12 of 24") == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pt",
        "history.csv",
        "model.safetensors",
    ]
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 1
    model = ModelBundle.load(out / "model.safetensors")
    assert model.spec.train_images == 96

    val_shards = Shards(val)
    rows = val_shards.read(["label"], positions=True)
    images = shards_to_tensor(val_shards, rows, 32)
    probabilities, _ = predict_proba(model, images, device="cpu", precision="fp32")
    accuracy = (probabilities.argmax(1) == rows["label"].to_numpy()).mean()
    assert history["val_accuracy"][0] == pytest.approx(accuracy)


def test_storage_size_below_image_size_trains_a_model_for_image_size(split_tables):
    """Images kept at 16 px, batches resized on the device to the model's 32 px."""
    train, val = (Shards(p) for p in split_tables)
    config = TrainConfig(**TINY_VIT, epochs=1, batch_size=16, storage_size=16)
    bundle, history = fit_shards(train, val, config)
    assert bundle.spec.image_size == 32
    assert bundle.build()(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    assert history[0]["train_loss"] > 0 and 0 <= history[0]["val_accuracy"] <= 1


def test_a_share_above_the_memory_budget_is_kept_encoded_and_trains_the_same(split_tables):
    """decoded_memory_gb between the share's encoded and decoded sizes: the images stay
    encoded and each batch is decoded when drawn: the same pixels, so the same weights."""
    train, val = (Shards(p) for p in split_tables)
    recipe = {**TINY_VIT, **NO_AUGMENTATION, "epochs": 1, "batch_size": 16}
    budget = encoded_gb(train, train.read(["label"], positions=True)) * 1.01
    assert budget < len(train) * 3 * 32**2 / 1e9  # below the decoded size
    decoded, _ = fit_shards(train, val, TrainConfig(**recipe))
    encoded, _ = fit_shards(train, val, TrainConfig(**recipe, decoded_memory_gb=budget))
    for key, tensor in decoded.state_dict.items():
        torch.testing.assert_close(encoded.state_dict[key], tensor)


def test_a_share_above_even_the_encoded_budget_is_streamed_from_the_shards(split_tables, caplog):
    """Below the encoded size too: the images stay in the shards. A batch gives the
    pixels decoded once would; an epoch's draws, localised, are the same draws, come a
    window of row groups at a time and read each row group once; the model trains."""
    train, val = (Shards(p) for p in split_tables)
    rows = train.read(["label"], positions=True)
    streamed = StreamedImages(train, rows, 32, window=2)
    assert len(streamed.keys) == 7  # row groups of 16: 50 rows in 4, 46 in 3
    index = torch.tensor([5, 0, 95, 49, 50])
    assert torch.equal(streamed[index], shards_to_tensor(train, rows, 32)[index])

    generator = torch.Generator().manual_seed(0)
    order = torch.multinomial(torch.ones(len(rows)), len(rows), True, generator=generator)
    local = streamed.localise(order, generator)
    assert sorted(local.tolist()) == sorted(order.tolist())
    blocks = streamed.block[local.numpy()]
    spans = sorted(  # each row group's first and last draw
        (np.flatnonzero(blocks == b)[0], np.flatnonzero(blocks == b)[-1]) for b in set(blocks)
    )
    windows, end = [], -1  # row groups whose draws interleave: one window
    for first, last in spans:
        if first > end:
            windows.append(0)
        windows[-1] += 1
        end = max(end, last)
    assert len(windows) == 4 and max(windows) <= streamed.window  # 7 row groups, 2 a window
    streamed = StreamedImages(train, rows, 32, window=1)  # a window per row group
    local = streamed.localise(order, generator)
    blocks = streamed.block[local.numpy()]
    assert (np.diff(blocks) != 0).sum() == len(set(blocks)) - 1  # each group's draws together
    for start in range(0, len(local), 16):
        streamed[local[start : start + 16]]
    assert streamed.groups_read == len(set(blocks))

    recipe = {**TINY_VIT, "epochs": 1, "batch_size": 16, "decoded_memory_gb": 1e-9}
    with caplog.at_level("WARNING"):
        bundle, history = fit_shards(train, val, TrainConfig(**recipe))
    assert "streamed from the shards" in caplog.text
    assert bundle.spec.train_images == 96 and history[0]["train_loss"] > 0


def _rank_pid(marker: str, rank: int, timeout: float = 120) -> int:
    """The pid of training rank ``rank`` of the run whose environment holds ``marker``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            try:
                environ = set((proc / "environ").read_bytes().split(b"\0"))
                command = (proc / "cmdline").read_bytes()
            except OSError:  # not ours, or gone
                continue
            wanted = {f"FER_TEST_RUN={marker}".encode(), f"RANK={rank}".encode()}
            if wanted <= environ and b"fer_pipeline.train" in command:
                return int(proc.name)
        time.sleep(0.2)
    raise TimeoutError(f"rank {rank} did not start")


@pytest.mark.skipif(sys.platform != "linux", reason="finds the rank's process in /proc")
def test_kedro_run_with_two_ranks_a_killed_rank_and_resume(small_raw, tmp_path, kedro_run):
    """`kedro run` starts 2 ranks and leaves one model, one history and one MLflow run;
    a rank killed with SIGKILL fails the run naming it, the earlier model intact; the
    rerun resumes from rank 0's checkpoint and finishes."""
    training = {**TINY_VIT, "epochs": 2, "batch_size": 16, "eval_batch_size": 64}
    parameters = {"training": training, "evaluation": {"tta_views": 1}}
    project = make_project(tmp_path / "project", small_raw, parameters=parameters)
    kedro_run(project, "data_processing")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    marker = uuid.uuid4().hex
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "FER_TEST_RUN": marker}

    def run(*params: str) -> subprocess.Popen:
        command = ["kedro", "run", "--pipelines", "training", "--params"]
        command.append(",".join(["training.nproc_per_node=2", *params]))
        return subprocess.Popen(
            command,
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    first = run()
    log = first.communicate(timeout=600)[0]
    assert first.returncode == 0, log[-4000:]
    assert "[rank 0/2]" in log and "[rank 1/2]" in log
    models = list((project / "data/06_models/model.safetensors").iterdir())
    histories = list((project / "data/07_model_output/training_history.csv").iterdir())
    assert len(models) == 1 and len(histories) == 1
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("fer_pipeline").experiment_id])
    assert len(runs) == 1 and "val_accuracy" in runs[0].data.metrics
    assert not list((project / "data/06_models/checkpoints").iterdir())

    killed = run("training.epochs=40")
    checkpoints = project / "data/06_models/checkpoints"
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("*.pt")) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(_rank_pid(marker, rank=1), signal.SIGKILL)
    log = killed.communicate(timeout=300)[0]
    assert killed.returncode != 0
    assert "training rank 1 (local rank 1" in log and "SIGKILL" in log, log[-4000:]
    assert list((project / "data/06_models/model.safetensors").iterdir()) == models
    assert catalog_of(project).load("model").spec.epochs == 2

    resumed = run("training.epochs=40")
    log = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, log[-4000:]
    assert "Resuming from" in log and "[rank 1/2]" in log
    assert len(list((project / "data/06_models/model.safetensors").iterdir())) == 2
    assert catalog_of(project).load("model").spec.epochs == 40


def test_training_leaves_out_the_label_qualities_it_is_told_to(split_tables, tmp_path):
    """label_qualities [manual]: AffectNet's automatically labelled rows are not trained on."""
    frame = Shards(split_tables[0]).read()
    frame["label_quality"] = ["automatic" if i % 3 == 0 else "manual" for i in range(len(frame))]
    write_shards([frame], tmp_path / "train", row_group_rows=16)
    train, val = Shards(tmp_path / "train"), Shards(split_tables[1])
    for qualities, expected in ((("manual", "automatic"), 96), (("manual",), 64)):
        config = TrainConfig(**TINY_VIT, label_qualities=qualities)
        images, targets, _, _ = rank_data(train, val, config, Ranks())
        assert len(images) == len(targets) == expected
