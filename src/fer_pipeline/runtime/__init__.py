"""Faces found and classified with ONNX Runtime, NumPy and OpenCV only: the detector and
crop, the exported classifier, and the Python API for programs that do not run Kedro
(docs/python-api.md)::

    from fer_pipeline.runtime import Recogniser

    recogniser = Recogniser.load()  # the project's newest export
    for face in recogniser.predict("photo.jpg"):
        print(face.label, face.probability, face.box)

ONNX Runtime, NumPy and OpenCV run the model; torch, timm, Kedro and MLflow are never
imported (MLflow only to read a ``models:/`` or ``runs:/`` URI).
"""

from fer_pipeline.runtime.recogniser import Face, Recogniser, RecognitionConfig

__all__ = ["Face", "RecognitionConfig", "Recogniser"]
