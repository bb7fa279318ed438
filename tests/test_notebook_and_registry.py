"""The data-report notebook runs on a real (small) run, and the pipelines are registered."""

from __future__ import annotations

import json

import matplotlib
from conftest import PROJECT, make_project
from kedro.framework.project import configure_project

from fer_pipeline.data.schema import SOURCES
from fer_pipeline.pipeline_registry import register_pipelines

matplotlib.use("Agg")


def test_data_report_notebook_runs(small_raw, tmp_path, kedro_run, monkeypatch):
    project = make_project(tmp_path / "project", small_raw)
    kedro_run(project, "data_processing")
    notebook = json.loads((PROJECT / "notebooks/data_report.ipynb").read_text())
    (project / "notebooks").mkdir()
    monkeypatch.chdir(project / "notebooks")
    scope: dict = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "data_report.ipynb", "exec"), scope)
    assert scope["report"]["sources_used"] == ["ferplus", "rafdb"]
    assert set(scope["counts"].index.get_level_values(0)) == {"train", "val", "test"}
    images = [a for a in scope["grid"].axes if a.get_images()]
    assert len(images) >= 2 * 7 * 2  # two sources, seven classes, at least two faces each


def test_pipelines_are_registered():
    configure_project("fer_pipeline")
    pipelines = register_pipelines()
    names = (
        "ingestion",
        "harmonisation",
        "merging",
        "splitting",
        "data_processing",
        "training",
        "evaluation",
        "inference",
        "export",
    )
    for name in names:
        assert name in pipelines and pipelines[name].nodes
    default = pipelines["__default__"].all_outputs()
    assert default >= {"train", "val", "test", "data_report", "model", "evaluation_report"}
    assert not default & {"inference_faces", "model_onnx"}  # on demand only
    namespaces = {n.namespace for n in pipelines["ingestion"].nodes}
    assert namespaces == set(SOURCES)
