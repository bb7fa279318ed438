"""Splitting: deduplication, train / val / test and the data report."""

from kedro.pipeline import Pipeline, node

from fer_pipeline.data.schema import SOURCES

from .nodes import data_report, split_faces, split_shards


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                split_faces,
                inputs=["faces_all", "params:splitting"],
                outputs=["split_index", "split_summary"],
                name="split_faces",
            ),
            node(
                split_shards,
                inputs=["split_index", *(f"{s}.faces" for s in SOURCES)],
                outputs=["train", "val", "test"],
                name="split_shards",
            ),
            node(
                data_report,
                inputs=[
                    "split_index",
                    "merge_summary",
                    "split_summary",
                    *(f"{s}.dropped" for s in SOURCES),
                ],
                outputs=["data_report", "data_report_plot"],
                name="data_report",
            ),
        ],
        tags=["splitting"],
    )
