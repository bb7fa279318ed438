"""The GPU run's single entry point, on the CPU with a tiny real subset: pack the splits
into parts under a size limit, then measure throughput, train and score from the parts."""

from __future__ import annotations

import json
import sys

import pandas as pd
from conftest import PROJECT, make_project

from fer_pipeline.data.versions import latest_split


def test_pack_then_run_on_cpu(small_raw, tmp_path, kedro_run):
    sys.path.insert(0, str(PROJECT / "benchmarks"))
    import gpu_run

    project = make_project(tmp_path / "project", small_raw)
    kedro_run(project, "data_processing")
    parts = gpu_run.main(
        ["pack", "--project", str(project), "--out", str(tmp_path / "pack"), "--part-mib", "0.3"]
    )
    assert len(parts) >= 2 and all(p.stat().st_size < 0.4 * 2**20 for p in parts)
    packed = pd.concat([pd.read_parquet(p) for p in parts])
    for split in ("train", "val", "test"):
        original = pd.read_parquet(latest_split(project, split))
        assert (packed["split"] == split).sum() == len(original)
    assert set(packed["image"]) == set(
        pd.concat(pd.read_parquet(latest_split(project, s)) for s in ("train", "val", "test"))[
            "image"
        ]
    )

    out = tmp_path / "out"
    results = gpu_run.main(
        [
            "run", "--pack", str(tmp_path / "pack"), "--out", str(out),
            "--device", "cpu", "--precision", "fp32", "--env", "gpu",
            "--throughput-steps", "2", "--throughput-image-size", "32",
            "--throughput-batch-size", "8",
            "--param", "image_size=32", "--param", "epochs=2", "--param", "batch_size=16",
            "--param", "warmup_epochs=0.5",
            "--teachers", "1", "--teacher-param", "image_size=24", "--teacher-param", "epochs=1",
            "--teacher-param", "warmup_epochs=0",
        ]
    )  # fmt: skip
    assert json.loads((out / "results.json").read_text())["training"]["epochs"] == 2
    throughput = results["throughput"]
    assert throughput["project_images_per_second"] > 0 < throughput["reference_images_per_second"]
    training = results["training"]
    (teacher,) = results["teachers"]  # trained first, at its own size, then distilled from
    assert teacher["recipe"]["image_size"] == 24 and teacher["epochs"] == 1
    assert [t["reference"] for t in training["teacher"]] == [teacher["path"]]
    assert training["recipe"]["distillation"] == "auto" and training["temperature"] > 0
    recipe = training["recipe"]  # conf/gpu's keys, then --param's
    assert recipe["model"] == "fer_resnet18" and recipe["image_size"] == 32
    assert recipe["soft_targets"] and recipe["balance"] == "loss" and recipe["epochs"] == 2
    for kind in ("plain", "tta"):
        scores = training["test"][kind]
        assert {"accuracy", "macro_f1", "accuracy_rafdb"} <= set(scores)  # FER+ rows: train
        assert 0 <= scores["accuracy"] <= 1
