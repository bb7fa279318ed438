"""Splitting: deduplication, train / val / test and the data report."""

from kedro.pipeline import Pipeline, node

from fer_pipeline.schema import SOURCES

from .nodes import data_report, split_faces


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                split_faces,
                inputs=["faces_all", "params:splitting"],
                outputs=["train", "val", "test", "split_summary"],
                name="split_faces",
            ),
            node(
                data_report,
                inputs=[
                    "train",
                    "val",
                    "test",
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
