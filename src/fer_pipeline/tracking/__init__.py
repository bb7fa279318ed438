"""MLflow: live metrics and split inputs, the registry's champion policy, the pyfunc
model, kedro-mlflow's datasets, and the store check before a run."""
