"""Datasets: records, readers (SER30K, MET-MEME, manifests, class folders), robust image loading, splits,
validation and preprocessing."""

from mghft.data.errors import DataFormatError
from mghft.data.images import (
    ALLOWED_FORMATS,
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    DecodedImage,
    DecodeLimits,
    ImageFormatError,
    ImageLoadError,
    ImageTooLargeError,
    decode_image,
    image_size,
    load_frames,
    load_image,
)
from mghft.data.manifest import read_folder, read_manifest, write_manifest
from mghft.data.metmeme import METMEME_SENTIMENTS, read_metmeme
from mghft.data.records import DatasetIndex, Sample
from mghft.data.ser30k import SER30K_CLASSES, read_ser30k, read_ser30k_json
from mghft.data.splits import Split, stratified_split
from mghft.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocess, RandAugment, build_transform
from mghft.data.validate import DatasetValidationError, Problem, ValidationReport, validate_index

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "METMEME_SENTIMENTS",
    "SER30K_CLASSES",
    "DataFormatError",
    "DatasetIndex",
    "DatasetValidationError",
    "DecodeLimits",
    "DecodedImage",
    "ImageFormatError",
    "ImageLoadError",
    "ImageTooLargeError",
    "Preprocess",
    "Problem",
    "RandAugment",
    "Sample",
    "Split",
    "ValidationReport",
    "build_transform",
    "decode_image",
    "image_size",
    "load_frames",
    "load_image",
    "read_folder",
    "read_manifest",
    "read_metmeme",
    "read_ser30k",
    "read_ser30k_json",
    "stratified_split",
    "validate_index",
    "write_manifest",
]
