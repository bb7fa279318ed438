"""Merging: every source's labelled faces into ``faces_all``."""

from kedro.pipeline import Pipeline, node

from fer_pipeline.data.schema import SOURCES

from .nodes import merged_faces


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                merged_faces,
                inputs=["params:neutral_top_up", *(f"{s}.labelled" for s in SOURCES)],
                outputs=["faces_all", "merge_summary"],
                name="merged_faces",
            )
        ],
        tags=["merging"],
    )
