"""Export: the latest model as ONNX (fp32 and int8) and TorchScript, with a parity check
and the int8 model's accuracy."""

from kedro.pipeline import Pipeline, node

from .nodes import exported_models


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                exported_models,
                ["model", "val", "test", "params:export"],
                ["model_onnx", "model_onnx_int8", "model_torchscript", "export_report"],
                name="exported_models",
            )
        ],
        tags=["export"],
    )
