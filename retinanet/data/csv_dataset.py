"""The CSV annotation format: ``path,x1,y1,x2,y2,class_name`` per box, ``path,,,,,`` for an empty image.

Coordinates are pixels of the image as displayed (after its EXIF orientation, see ``image_io``)
and any float notation (``20``, ``60.5``, ``2e1``); boxes may touch or cross the border.
Ignore regions use the reserved class ``__ignore__`` (ignored for every class) or
``__ignore__:<class name>`` (ignored for that class only); they never enter the class list.
"""
import os
from typing import Sequence

import numpy as np

from retinanet.data.class_list import IGNORE_CLASS, check_class_names, read_class_list
from retinanet.data.dataset import DetectionDataset, group_by_image
from retinanet.data.text_files import read_csv_rows
from retinanet.data.transforms import Transform
from retinanet.errors import UserError

# ignore_labels value of an ``__ignore__`` region: ignored for every class.
IGNORE_ALL_CLASSES = -1

_FIELDS = "path,x1,y1,x2,y2,class_name"
_COORDINATE_NAMES = ("x1", "y1", "x2", "y2")


def _describe_classes(class_names: "list[str]") -> str:
    shown = ", ".join(class_names[:10])
    return shown + (f", ... ({len(class_names)} in all)" if len(class_names) > 10 else "")


def _label_of(class_name: str, class_index: "dict[str, int]", class_names: "list[str]", where: str):
    """(label, is_ignore) of an annotation's class field."""
    if class_name == IGNORE_CLASS:
        return IGNORE_ALL_CLASSES, True
    target, is_ignore = class_name, False
    if class_name.startswith(IGNORE_CLASS + ":"):
        target, is_ignore = class_name[len(IGNORE_CLASS) + 1:], True
    label = class_index.get(target)
    if label is None:
        raise UserError(f"{where}: unknown class {target!r} (classes: {_describe_classes(class_names)})")
    return label, is_ignore


def _not_a_number(where: str, texts: "tuple[str, ...]") -> UserError:
    for name, text in zip(_COORDINATE_NAMES, texts):
        try:
            float(text)
        except ValueError:
            return UserError(f"{where}: {name} {text!r} is not a number")
    raise AssertionError("called for numbers")


def _parse_annotation_file(path: str, class_names: "list[str]", delimiter: str):
    """Read every row; return image paths in first-seen order, their first line, and per-box arrays.

    Per box: image index (B,), coordinates (B, 4) float64, label (B,), ignore flag (B,), line (B,).
    """
    class_index = {name: label for label, name in enumerate(class_names)}
    # class field -> (label, is_ignore), worked out once per distinct spelling
    label_of_field: "dict[str, tuple[int, bool]]" = {}
    image_index: "dict[str, int]" = {}
    first_lines: "list[int]" = []
    box_images, box_coords, box_labels, box_lines = [], [], [], []
    for line, row in read_csv_rows(path, delimiter):
        if len(row) != 6:
            raise UserError(
                f"{path}:{line}: expected 6 fields '{_FIELDS}' separated by {delimiter!r}, "
                f"got {len(row)}: {row!r}"
            )
        image_path, x1, y1, x2, y2, class_name = [field.strip() for field in row]
        if not image_path:
            raise UserError(f"{path}:{line}: empty image path")
        image = image_index.get(image_path)
        if image is None:
            image = image_index[image_path] = len(first_lines)
            first_lines.append(line)
        if not (x1 and y1 and x2 and y2 and class_name):
            if x1 or y1 or x2 or y2 or class_name:
                raise UserError(f"{path}:{line}: some of x1,y1,x2,y2,class_name are empty; give all or none")
            continue  # 'path,,,,,': an image without objects
        try:
            box_coords.append((float(x1), float(y1), float(x2), float(y2)))
        except ValueError:
            raise _not_a_number(f"{path}:{line}", (x1, y1, x2, y2)) from None
        label = label_of_field.get(class_name)
        if label is None:
            label = label_of_field[class_name] = _label_of(class_name, class_index, class_names, f"{path}:{line}")
        box_images.append(image)
        box_labels.append(label)
        box_lines.append(line)
    labels = np.array(box_labels, dtype=np.int64).reshape(-1, 2)  # (B, 2) label, is_ignore
    return (
        list(image_index),
        first_lines,
        np.array(box_images, dtype=np.int64),
        np.array(box_coords, dtype=np.float64).reshape(-1, 4),
        labels[:, 0],
        labels[:, 1].astype(bool),
        np.array(box_lines, dtype=np.int64),
    )


def _check_boxes(path: str, coords: np.ndarray, lines: np.ndarray) -> None:
    """Stop at the first box (in file order) that is not finite or has x2 <= x1 or y2 <= y1."""
    finite = np.isfinite(coords).all(axis=1)
    wide = coords[:, 2] > coords[:, 0]
    tall = coords[:, 3] > coords[:, 1]
    bad = np.flatnonzero(~(finite & wide & tall))
    if bad.size == 0:
        return
    first = bad[0]
    x1, y1, x2, y2 = coords[first]
    where = f"{path}:{lines[first]}"
    if not finite[first]:
        raise UserError(f"{where}: coordinates must be finite numbers, got {x1}, {y1}, {x2}, {y2}")
    if not wide[first]:
        raise UserError(f"{where}: x2 ({x2}) must be greater than x1 ({x1})")
    raise UserError(f"{where}: y2 ({y2}) must be greater than y1 ({y1})")


def _resolve_image_paths(path: str, raw_paths: "list[str]", first_lines: "list[int]") -> "list[str]":
    """Relative paths are looked up in the current directory first, then in the CSV file's folder."""
    csv_dir = os.path.dirname(os.path.abspath(path))
    resolved, missing = [], []
    for raw, line in zip(raw_paths, first_lines):
        if os.path.isabs(raw) or os.path.isfile(raw):
            candidate = raw
        else:
            candidate = os.path.join(csv_dir, raw)
        if not os.path.isfile(candidate):
            missing.append((raw, line))
        resolved.append(candidate)
    if missing:
        raw, line = missing[0]
        places = "" if os.path.isabs(raw) else f" in {os.getcwd()} or {csv_dir}"
        raise UserError(
            f"{path}:{line}: image {raw!r} not found{places} "
            f"({len(missing)} of {len(raw_paths)} images are missing)"
        )
    return resolved


class CSVDataset(DetectionDataset):
    """Images and boxes listed in a CSV annotation file.

    Args:
        annotations_path: the annotation CSV.
        classes: class names (label = position) or the path of a ``name,id`` class csv.
        transform: see ``DetectionDataset``.
        delimiter: field separator; ``" "`` reads files written by the CrowdHuman fork.

    Every image's header is read here (its size), so a typo or a broken image fails at
    start-up, with a progress bar for large files; training's aspect-ratio batching then costs
    nothing more.
    """

    def __init__(
        self,
        annotations_path: "str | os.PathLike",
        classes: "Sequence[str] | str | os.PathLike",
        transform: "Transform | None" = None,
        delimiter: str = ",",
    ):
        path = os.fspath(annotations_path)
        if not os.path.isfile(path):
            raise UserError(f"{path}: annotation file not found")
        if len(delimiter) != 1:
            raise UserError(f"the CSV delimiter must be one character, got {delimiter!r}")
        if isinstance(classes, (str, os.PathLike)):
            class_names = read_class_list(classes)
        else:
            class_names = check_class_names(classes)
        raw_paths, first_lines, box_images, coords, labels, is_ignore, lines = _parse_annotation_file(
            path, class_names, delimiter
        )
        if not raw_paths:
            raise UserError(f"{path}: no annotations")
        _check_boxes(path, coords, lines)
        image_paths = _resolve_image_paths(path, raw_paths, first_lines)

        annotations = group_by_image(len(raw_paths), box_images, coords, labels, is_ignore)
        super().__init__(
            class_names, image_paths, annotations, [f"{path}:{line}" for line in first_lines], transform
        )
        self.annotations_path = path
        self.read_image_sizes(f"image sizes ({os.path.basename(path)})")
