"""Export: the latest model as ONNX and TorchScript, with a parity check."""

from kedro.pipeline import Pipeline, node

from .nodes import exported_models


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                exported_models,
                ["model", "test", "params:export"],
                ["model_onnx", "model_torchscript", "export_report"],
                name="exported_models",
            )
        ],
        tags=["export"],
    )
