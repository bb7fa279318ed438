"""Shared fixtures: the real data in ../shared/data, small subsets of it in the release
layouts, and throwaway copies of this Kedro project to run pipelines in."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from fer_pipeline.config.loader import raw_data
from fer_pipeline.data.shards import Shards, write_shards
from fer_pipeline.data.versions import MODEL_INPUT

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = raw_data(PROJECT)
"""The real releases: the project's ``raw_data`` (conf/base/globals.yml)."""
VIT_RECIPE = yaml.safe_load((PROJECT / "conf/vit/parameters_training.yml").read_text())["training"]
"""The keys conf/vit sets: with them, TrainConfig is the ViT-Tiny recipe that was its
defaults before the measured CNN recipe became them. Tests written for those defaults
(tiny ViT-Tiny fits) start from it and override what they shrink."""

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# One MLflow database for the whole session: created (and migrated) once.
os.environ.setdefault(
    "MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp(prefix='fer-mlflow-')}/mlflow.db"
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real FER+ and RAF-DB releases."""
    if not (SHARED_DATA / "ferplus" / "fer2013new.csv").is_file():
        pytest.fail(f"The real data is expected at {SHARED_DATA} (see docs/data.md)")
    return SHARED_DATA


def write_ferplus_subset(shared: Path, target: Path, rows: int) -> Path:
    """The first ``rows`` rows of both FER+ files, in the release layout."""
    target.mkdir(parents=True, exist_ok=True)
    with gzip.open(shared / "ferplus" / "fer2013.csv.gz", "rt") as src:
        lines = [next(src) for _ in range(rows + 1)]
    (target / "fer2013.csv").write_text("".join(lines))
    with open(shared / "ferplus" / "fer2013new.csv") as src:
        lines = [next(src) for _ in range(rows + 1)]
    (target / "fer2013new.csv").write_text("".join(lines))
    return target


def write_rafdb_subset(shared: Path, target: Path, per_split: int) -> Path:
    """The first ``per_split`` train and test images of RAF-DB, in the release layout
    (``basic/EmoLabel`` and ``basic/Image/aligned.zip``)."""
    basic = target / "basic"
    (basic / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (basic / "Image").mkdir(parents=True, exist_ok=True)
    labels = (shared / "rafdb/basic/EmoLabel/list_patition_label.txt").read_text().splitlines()
    chosen = [line for line in labels if line.startswith("train_")][:per_split]
    chosen += [line for line in labels if line.startswith("test_")][:per_split]
    (basic / "EmoLabel/list_patition_label.txt").write_text("\n".join(chosen) + "\n")
    with (
        zipfile.ZipFile(shared / "rafdb/basic/Image/aligned.zip") as src,
        zipfile.ZipFile(basic / "Image/aligned.zip", "w") as dst,
    ):
        for line in chosen:
            member = f"aligned/{line.split()[0].removesuffix('.jpg')}_aligned.jpg"
            dst.writestr(member, src.read(member))
    return basic


@pytest.fixture
def small_raw(shared_data: Path, tmp_path: Path) -> Path:
    """A raw-data root with 300 FER+ rows and 40 + 40 RAF-DB images."""
    root = tmp_path / "raw"
    write_ferplus_subset(shared_data, root / "ferplus", rows=300)
    write_rafdb_subset(shared_data, root / "rafdb", per_split=40)
    return root


def make_project(
    root: Path,
    raw_data: Path,
    parameters: dict | None = None,
    catalog: dict | None = None,
    env: str = "local",
) -> Path:
    """A copy of this project's configuration in ``root`` reading ``raw_data``;
    ``parameters`` and ``catalog`` go to ``conf/<env>/``."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT / name, root / name)
    shutil.copytree(
        PROJECT / "conf", root / "conf", dirs_exist_ok=True, ignore=shutil.ignore_patterns("local")
    )
    (root / "src").mkdir(exist_ok=True)  # the package itself is installed
    (root / "conf" / "local").mkdir(exist_ok=True)  # Kedro's default environment
    local = root / "conf" / env
    local.mkdir(exist_ok=True)
    (local / "globals.yml").write_text(yaml.safe_dump({"raw_data": str(raw_data)}))
    for name, content in (("parameters", parameters), ("catalog", catalog)):
        if content:
            (local / f"{name}.yml").write_text(yaml.safe_dump(content))
    return root


Runner = Callable[..., dict]


@pytest.fixture
def kedro_run(monkeypatch: pytest.MonkeyPatch) -> Runner:
    """Run named pipelines of a project made by ``make_project``."""

    def run(project: Path, *pipelines: str, env: str | None = None) -> dict:
        monkeypatch.chdir(project)
        bootstrap_project(project)
        try:
            with KedroSession.create(project_path=project, env=env) as session:
                return session.run(pipeline_names=list(pipelines))
        finally:
            # The run, finished or failed, stays in MLflow's active-run stack
            # (docs/known-limits.md) with its system-metrics thread, which holds a
            # database connection: a few dozen such runs exhaust the pool.
            while mlflow.active_run():
                mlflow.end_run()

    return run


@contextmanager
def raises_in_chain(kind: type[BaseException], match: str = ""):
    """Like ``pytest.raises``, but also accepts ``kind`` as the cause of another error
    (Kedro wraps errors raised while loading a dataset in ``DatasetError``)."""
    with pytest.raises(Exception) as caught:
        yield caught
    error: BaseException | None = caught.value
    while error is not None and not isinstance(error, kind):
        error = error.__cause__ or error.__context__
    assert error is not None, f"{kind.__name__} not raised: {caught.value!r}"
    assert re.search(match, str(error)), f"{match!r} not in {error}"
    caught.error = error


def catalog_of(project: Path, env: str | None = None):
    """The project's data catalog, to load what a run wrote."""
    bootstrap_project(project)
    session = KedroSession.create(project_path=project, env=env)
    return session.load_context().catalog


@pytest.fixture(scope="module")
def faces(shared_data):
    """Two RAF-DB test faces that the detectors find on a canvas (``serving_fixtures``)."""
    from serving_fixtures import raf_faces

    return raf_faces(shared_data, 2)


@pytest.fixture(scope="module")
def bundle(shared_data):
    """A real, quickly trained ViT-Tiny at 32 px (``serving_fixtures.small_model``)."""
    from serving_fixtures import small_model

    return small_model(shared_data)


@pytest.fixture(scope="module")
def two_source_splits(shared_data, tmp_path_factory) -> tuple[Shards, Shards, Shards]:
    """Train, val and test shards of real FER+ and RAF-DB faces, both in each split."""
    from fer_pipeline.data.images import encode_png
    from fer_pipeline.datasets import FerPlusRelease

    root = tmp_path_factory.mktemp("two_sources")
    fer = FerPlusRelease(str(write_ferplus_subset(shared_data, root / "fer", rows=60))).load()
    rows = [
        (encode_png(pixels), int(label), "ferplus")
        for pixels, label in zip(fer.table["pixels"], fer.table["label_orig"])
    ]
    lines = (shared_data / "rafdb/basic/EmoLabel/list_patition_label.txt").read_text().split()
    with zipfile.ZipFile(shared_data / "rafdb/basic/Image/aligned.zip") as archive:
        for name, label in zip(lines[:120:2], lines[1:120:2]):
            member = f"aligned/{name.removesuffix('.jpg')}_aligned.jpg"
            rows.append((archive.read(member), int(label) - 1, "rafdb"))
    frame = pd.DataFrame(rows, columns=["image", "label", "source"])
    frame["soft_label"] = list(np.eye(7, dtype=np.float32)[frame["label"]])
    frame["source_id"] = [f"{s}-{i}" for i, s in enumerate(frame["source"])]
    splits = {}
    for name, (start, stop) in {"train": (0, 40), "val": (40, 50), "test": (50, 60)}.items():
        part = frame[frame.groupby("source").cumcount().between(start, stop - 1)]
        write_shards([part], root / name, row_group_rows=16)
        splits[name] = Shards(root / name)
    return splits["train"], splits["val"], splits["test"]


def project_with_splits(root: Path, splits: tuple[Shards, ...]) -> Path:
    """A scratch copy of the project (``benchmarks/_scratch.py``) whose newest model
    input is ``splits`` (train, val, test), versioned as data_processing writes them."""
    sys.path.insert(0, str(PROJECT / "benchmarks"))
    try:
        from _scratch import scratch_project
    finally:
        sys.path.remove(str(PROJECT / "benchmarks"))
    root.mkdir(parents=True)
    project = scratch_project(root)
    for split in splits:
        version = project / MODEL_INPUT / split.folder.name / "2026-01-01T00.00.00.000Z"
        version.mkdir(parents=True)
        (version / split.folder.name).symlink_to(split.folder)
    return project
