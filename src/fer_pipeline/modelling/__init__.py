"""Models, the training engine, distillation, evaluation and export: torch and timm,
importable without Kedro or MLflow."""
