"""Inference: the latest exported model (ONNX) on a folder or zip of images, and on the
videos of a folder."""

from kedro.pipeline import Pipeline, node

from .nodes import annotated_images, predicted_faces, video_faces


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                predicted_faces,
                ["inference_images", "model_onnx", "params:inference"],
                ["inference_faces", "inference_report"],
                name="predicted_faces",
            ),
            node(
                annotated_images,
                ["inference_images", "inference_faces", "params:inference"],
                "annotated_images",
                name="annotated_images",
            ),
            node(
                video_faces,
                ["inference_videos", "model_onnx", "params:inference"],
                ["video_faces", "video_report", "video_timelines"],
                name="video_faces",
            ),
        ],
        tags=["inference"],
    )
