"""Evaluation: model + val / test -> metrics, plots, predictions, and the registered
model's alias (champion or challenger)."""

from kedro.pipeline import Pipeline, node

from .nodes import evaluate_model, promote_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                evaluate_model,
                inputs=["model", "val", "test", "params:evaluation"],
                outputs=[
                    "evaluation_scores",
                    "evaluation_metrics",
                    "confusion_matrix_plot",
                    "reliability_plot",
                    "test_predictions",
                ],
                name="evaluate_model",
            ),
            node(
                promote_model,
                inputs=["evaluation_scores", "model", "model_registration", "test"],
                outputs="evaluation_report",
                name="promote_model",
            ),
        ],
        tags=["evaluation"],
    )
