"""Evaluation: model + val / test -> metrics, plots, predictions."""

from kedro.pipeline import Pipeline, node

from .nodes import evaluate_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                evaluate_model,
                inputs=["model", "val", "test", "params:evaluation"],
                outputs=[
                    "evaluation_report",
                    "evaluation_metrics",
                    "confusion_matrix_plot",
                    "reliability_plot",
                    "test_predictions",
                ],
                name="evaluate_model",
            )
        ],
        tags=["evaluation"],
    )
