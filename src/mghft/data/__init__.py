"""Datasets: records, readers (SER30K, MET-MEME, manifests, class folders), robust image loading, splits,
validation and preprocessing.

Names are imported on first use, so that ``mghft.data.images`` (and the decode workers, which import only it)
start without loading torch (``mghft.data.transforms`` needs it).
"""

from __future__ import annotations

from mghft._lazy import lazy_getattr

_EXPORTS: dict[str, str] = {
    "ALLOWED_FORMATS": "mghft.data.images",
    "DEFAULT_MAX_PIXELS": "mghft.data.images",
    "DataFormatError": "mghft.data.errors",
    "DatasetIndex": "mghft.data.records",
    "DatasetValidationError": "mghft.data.validate",
    "DecodeLimits": "mghft.data.images",
    "DecodedImage": "mghft.data.images",
    "IMAGENET_MEAN": "mghft.data.transforms",
    "IMAGENET_STD": "mghft.data.transforms",
    "IMAGE_EXTENSIONS": "mghft.data.images",
    "ImageFormatError": "mghft.data.images",
    "ImageLoadError": "mghft.data.images",
    "ImageTooLargeError": "mghft.data.images",
    "METMEME_SENTIMENTS": "mghft.data.metmeme",
    "Preprocess": "mghft.data.transforms",
    "Problem": "mghft.data.validate",
    "RandAugment": "mghft.data.transforms",
    "SER30K_CLASSES": "mghft.data.ser30k",
    "Sample": "mghft.data.records",
    "Split": "mghft.data.splits",
    "ValidationReport": "mghft.data.validate",
    "build_transform": "mghft.data.transforms",
    "decode_image": "mghft.data.images",
    "image_size": "mghft.data.images",
    "load_frames": "mghft.data.images",
    "load_image": "mghft.data.images",
    "read_folder": "mghft.data.manifest",
    "read_manifest": "mghft.data.manifest",
    "read_metmeme": "mghft.data.metmeme",
    "read_ser30k": "mghft.data.ser30k",
    "read_ser30k_json": "mghft.data.ser30k",
    "stratified_split": "mghft.data.splits",
    "validate_index": "mghft.data.validate",
    "write_manifest": "mghft.data.manifest",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, globals(), _EXPORTS)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
