"""Model, training and evaluation code: torch and timm only, importable without Kedro."""
