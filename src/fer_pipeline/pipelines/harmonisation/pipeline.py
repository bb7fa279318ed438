"""Harmonisation: one namespace per source, each with its label map in parameters."""

from kedro.pipeline import Pipeline, node

from fer_pipeline.data.schema import SOURCES

from .nodes import face_table, labelled_faces


def create_pipeline(**kwargs) -> Pipeline:
    template = Pipeline(
        [
            node(face_table, inputs="faces", outputs="face_table", name="face_table"),
            node(
                labelled_faces,
                inputs=["face_table", "skipped", "params:labels"],
                outputs=["labelled", "dropped"],
                name="labelled_faces",
            ),
        ]
    )
    return sum(
        (Pipeline(template, namespace=source, tags=["harmonisation"]) for source in SOURCES),
        Pipeline([]),
    )
