"""The evaluation's and the export's parameters: built and checked by Kedro before the
first node runs, naming the key and what it may be."""

from __future__ import annotations

import re

import mlflow
import pytest
from conftest import catalog_of, make_project, raises_in_chain
from kedro.validation import ParameterValidationError

from fer_pipeline.pipelines.evaluation.config import EvaluationConfig
from fer_pipeline.pipelines.export.config import ExportConfig

BAD = [
    # (pipeline, its parameters, what the message must say)
    (
        "evaluation",
        {"tta_veiws": 8},
        [r"tta_veiws", r"did you mean 'tta_views'", r"the keys are device, precision"],
    ),
    ("evaluation", {"tta_views": -1}, [r"tta_views", r"greater than or equal to 0"]),
    ("evaluation", {"batch_size": "many"}, [r"batch_size", r"valid integer"]),
    ("evaluation", {"precision": "fp8"}, [r"precision", r"'auto', 'fp32', 'bf16' or 'fp16'"]),
    (
        "evaluation",
        {"tta_augment": {"scale": "0.9"}},
        [r"tta_augment\.scale", r"valid tuple"],
    ),
    (
        "export",
        {"tolerence": 0.001},
        [r"tolerence", r"did you mean 'tolerance'", r"the keys are parity_images"],
    ),
    ("export", {"parity_images": "all"}, [r"parity_images", r"valid integer"]),
]


@pytest.mark.parametrize(("pipeline", "params", "expected"), BAD)
def test_bad_parameters_stop_the_run_before_any_node(
    pipeline, params, expected, small_raw, tmp_path, kedro_run
):
    """A typo, a value out of range, a wrong type or a bad choice stops a real run of
    ``data_processing`` + the pipeline before data_processing's first node writes
    anything, with a message naming the key and what it may be."""
    project = make_project(tmp_path / "project", small_raw, parameters={pipeline: params})
    with raises_in_chain(ParameterValidationError) as error:
        kedro_run(project, "data_processing", pipeline)
    message = str(error.error)
    assert f"Parameter '{pipeline}'" in message
    for pattern in expected:
        assert re.search(pattern, message), (pattern, message)
    assert not [p for p in (project / "data").rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"device": "gpu"}, r"device\n.*must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        ({"tta": "maybe"}, r"tta\n.*valid boolean"),
        ({"tta_augment": {"rotaton": 8}}, r"tta_augment\n.*'rotaton' \(did you mean 'rotation'"),
        ({"tta_augment": {"hflip": 2}}, r"tta_augment\.hflip\n.*less than or equal to 1"),
        ({"tta_augment": {"scale": [1.1, 0.9]}}, r"tta_augment\n.*low <= high"),
        ({"tta_augment": {"scale": [0, 1]}}, r"tta_augment\.scale\.0\n.*greater than 0"),
        ({"tta_augment": 3}, r"tta_augment\n.*valid dictionary"),
    ],
)
def test_evaluation_config_names_the_key(raw, match):
    with pytest.raises(ValueError, match=match):
        EvaluationConfig.model_validate(raw)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"tolerance": 0}, r"tolerance\n.*greater than 0"),
        ({"tolerance": "small"}, r"tolerance\n.*valid number"),
        ({"timing_faces": -1}, r"timing_faces\n.*greater than 0"),
        ({"calibration_images": 1.5}, r"calibration_images\n.*fractional part"),
    ],
)
def test_export_config_names_the_key(raw, match):
    with pytest.raises(ValueError, match=match):
        ExportConfig.model_validate(raw)


def test_defaults_live_in_the_models_and_the_environments_change_them(tmp_path):
    """The YAML names only what it changes; ``1e-3`` (a string to YAML 1.1) is a number."""
    project = make_project(tmp_path / "project", tmp_path / "raw")
    params = {
        env: {k: catalog_of(project, env=env).load(f"params:{k}") for k in ("evaluation", "export")}
        for env in (None, "cpu", "quick")
    }
    base = params[None]
    assert base["evaluation"] == EvaluationConfig() and base["export"] == ExportConfig()
    cpu = params["cpu"]["evaluation"]
    assert (cpu.precision, cpu.tta_views, cpu.tta_augment.hflip) == ("bf16", 16, 0.5)
    assert (cpu.tta_augment.rotation, cpu.tta_augment.scale) == (8, (0.9, 1.1))
    assert (params["quick"]["evaluation"].tta_views, params["quick"]["export"]) == (
        1,
        base["export"],
    )
    assert ExportConfig.model_validate({"tolerance": "1e-3"}).tolerance == 1e-3


def test_mlflow_gets_the_parameters_flat(tmp_path):
    """As the training recipe's: every key with its default, one MLflow parameter each."""
    from fer_pipeline.hooks import TypedParamsHook

    inputs = {
        "params:evaluation": EvaluationConfig(tta_views=8),
        "params:export": ExportConfig(tolerance="1e-3"),
    }
    while mlflow.active_run():  # an in-process kedro run of an earlier test leaves one
        mlflow.end_run()  # in MLflow's active-run stack (docs/known-limits.md)
    mlflow.set_experiment("test_parameters")
    with mlflow.start_run() as run:
        TypedParamsHook().before_node_run(node=None, inputs=inputs)
    params = mlflow.get_run(run.info.run_id).data.params
    assert params["evaluation.tta_views"] == "8" and params["evaluation.precision"] == "auto"
    assert params["evaluation.tta_augment.scale"] == "[0.95, 1.05]"
    assert (params["export.tolerance"], params["export.parity_images"]) == ("0.001", "64")
