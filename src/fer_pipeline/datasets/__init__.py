"""Kedro datasets: the sources in their release layouts, and the local files a run reads
and writes."""

from fer_pipeline.datasets.affectnet import AffectNetRelease
from fer_pipeline.datasets.ferplus import FerPlusRelease
from fer_pipeline.datasets.files import BytesDataset, ModelBundleDataset, ZipDataset
from fer_pipeline.datasets.huggingface import HuggingFaceFaces
from fer_pipeline.datasets.image_folder import ImageFolderFaces
from fer_pipeline.datasets.inputs import ImageFiles, VideoFiles
from fer_pipeline.datasets.rafdb import RafDbRelease
from fer_pipeline.datasets.shards import Shards, ShardsDataset

__all__ = [
    "AffectNetRelease",
    "BytesDataset",
    "FerPlusRelease",
    "HuggingFaceFaces",
    "ImageFiles",
    "ImageFolderFaces",
    "ModelBundleDataset",
    "RafDbRelease",
    "Shards",
    "ShardsDataset",
    "VideoFiles",
    "ZipDataset",
]
