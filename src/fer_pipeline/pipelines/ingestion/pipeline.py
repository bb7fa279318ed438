"""Ingestion: one namespace per source (``ferplus``, ``rafdb``, ``affectnet``)."""

from kedro.pipeline import Pipeline, node

from fer_pipeline.data.schema import SOURCES

from .nodes import faces_from_release


def create_pipeline(**kwargs) -> Pipeline:
    template = Pipeline(
        [
            node(
                faces_from_release,
                inputs=["release", "params:ingestion"],
                outputs=["faces", "skipped"],
                name="faces_from_release",
            )
        ]
    )
    return sum(
        (
            Pipeline(
                template, namespace=source, parameters={"params:ingestion"}, tags=["ingestion"]
            )
            for source in SOURCES
        ),
        Pipeline([]),
    )
