"""Kedro datasets that read the facial-expression sources in their release layouts."""

from fer_pipeline.datasets.affectnet import AffectNetRelease
from fer_pipeline.datasets.ferplus import FerPlusRelease
from fer_pipeline.datasets.huggingface import HuggingFaceFaces
from fer_pipeline.datasets.model import ModelBundleDataset
from fer_pipeline.datasets.rafdb import RafDbRelease

__all__ = [
    "AffectNetRelease",
    "FerPlusRelease",
    "HuggingFaceFaces",
    "ModelBundleDataset",
    "RafDbRelease",
]
