"""Datasets, transforms, batching, class lists, image reading, CrowdHuman's odgt files and the loader factory.

Names are imported on first use, so scripts that only convert annotations
(``build_annotations_file.py``) never pay for importing torch.
"""
import importlib

_MODULE_OF = {
    "IGNORE_CLASS": "class_list",
    "check_class_names": "class_list",
    "read_class_list": "class_list",
    "read_class_names_txt": "class_list",
    "write_class_list": "class_list",
    "CocoDataset": "coco_dataset",
    "PAD_MULTIPLE": "collate",
    "collate_batch": "collate",
    "make_loader": "loader",
    "IGNORE_ALL_CLASSES": "csv_dataset",
    "CSVDataset": "csv_dataset",
    "CrowdHumanDataset": "crowdhuman_people",
    "DetectionDataset": "dataset",
    "read_image": "image_io",
    "read_image_size": "image_io",
    "AspectRatioBatchSampler": "samplers",
    "IMAGENET_MEAN": "transforms",
    "IMAGENET_STD": "transforms",
    "Transform": "transforms",
    "resize_scale": "transforms",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_MODULE_OF))
