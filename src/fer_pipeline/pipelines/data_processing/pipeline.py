"""data_processing: every data stage, raw releases to train / val / test."""

from kedro.pipeline import Pipeline

from fer_pipeline.pipelines import harmonisation, ingestion, merging, splitting


def create_pipeline(**kwargs) -> Pipeline:
    stages = (ingestion, harmonisation, merging, splitting)
    return sum((stage.create_pipeline() for stage in stages), Pipeline([]))
