"""Training: train / val -> model, history, MLflow metrics, curves and pyfunc model."""

from kedro.pipeline import Pipeline, node

from .nodes import (
    pyfunc_model,
    remove_checkpoint,
    train_model,
    training_curves,
    training_metrics,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                train_model,
                ["train", "val", "params:training"],
                ["model", "training_history", "training_checkpoint"],
                name="train_model",
            ),
            node(
                remove_checkpoint,
                ["model", "training_checkpoint"],
                None,
                name="remove_checkpoint",
            ),
            node(training_metrics, "training_history", "training_metrics", name="training_metrics"),
            node(training_curves, "training_history", "training_curves", name="training_curves"),
            node(pyfunc_model, "model", "mlflow_model", name="pyfunc_model"),
        ],
        tags=["training"],
    )
