"""Training: train / val -> model, history, curves, and the pyfunc model logged to MLflow
and registered (the epochs' metrics reach MLflow live, from the training node)."""

from kedro.pipeline import Pipeline, node

from .nodes import (
    pyfunc_model,
    register_model,
    remove_checkpoint,
    train_model,
    training_curves,
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
            node(training_curves, "training_history", "training_curves", name="training_curves"),
            node(pyfunc_model, "model", "mlflow_model", name="pyfunc_model"),
            node(
                register_model,
                ["mlflow_model", "params:registry"],
                "model_registration",
                name="register_model",
            ),
        ],
        tags=["training"],
    )
