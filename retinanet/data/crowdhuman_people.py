"""CrowdHuman straight from its odgt files, for training: people as triplets, or person and head boxes.

``train.py --dataset crowdhuman --crowdhuman_path DIR`` reads the standard layout of
``retinanet.data.crowdhuman`` (``annotation_train.odgt``, ``CrowdHuman_train01..03/Images``, ...).

With ``person_triplets`` every annotated person is one object with three boxes, from its ``fbox``,
``vbox`` and ``hbox``, clipped to the image. The ignore rules are the official evaluation's:

- a ``tag == "mask"`` region and a person with ``extra.ignore == 1`` are ignore regions (their
  full box): anchors inside them are left out of the loss;
- a person whose head has ``head_attr.ignore == 1`` (or no ``hbox``, or a head outside the
  image) stays a person, and only its head box is not trained (``head_valid`` False).

Without it, the boxes are those ``build_annotations_file.py`` writes (``person`` from the ``body``
box, ``head``), so a plain model trains on exactly what it would read from the converted CSV.
"""
import os
from typing import Sequence

import numpy as np
from tqdm import tqdm

from retinanet.data.crowdhuman import (
    BODY_CLASS,
    CROWDHUMAN_CLASSES,
    MIN_BOX_SIDE,
    SPLITS,
    _is_xywh,
    convert_split,
    index_images,
    read_odgt,
)
from retinanet.data.dataset import DetectionDataset, group_by_image, make_annotation
from retinanet.data.image_io import read_image_size
from retinanet.data.transforms import Transform
from retinanet.errors import UserError

PERSON_CLASSES = (BODY_CLASS,)


def _xyxy(value, where: str, key: str) -> "list[float]":
    if not _is_xywh(value):
        raise UserError(f"{where}: '{key}' must be [x, y, width, height] numbers, got {value!r}")
    x, y, w, h = (float(v) for v in value)
    if w < 0 or h < 0:
        raise UserError(f"{where}: '{key}' {value} has a negative width or height")
    return [x, y, x + w, y + h]


def _clip(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(..., 4) x1y1x2y2 clipped to the image."""
    clipped = boxes.copy()
    clipped[..., 0::2] = np.clip(boxes[..., 0::2], 0, width)
    clipped[..., 1::2] = np.clip(boxes[..., 1::2], 0, height)
    return clipped


def _has_area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0] >= MIN_BOX_SIDE) & (boxes[..., 3] - boxes[..., 1] >= MIN_BOX_SIDE)


def _flag(gtbox: dict, key: str) -> bool:
    attributes = gtbox.get(key)
    return isinstance(attributes, dict) and attributes.get("ignore", 0) != 0


def person_annotation(record: dict, size: "tuple[int, int]", where: str) -> "dict[str, np.ndarray]":
    """One odgt record's people as triplets, in original pixels (module docstring for the rules).

    Returns ``make_annotation``'s dict (boxes (N, 4) full bodies, labels (N,) zeros, ignore (M, 4),
    ignore_labels (M,) -1) plus visible_boxes (N, 4), head_boxes (N, 4) and head_valid (N,) bool.
    A person whose full or visible box is under a pixel inside the image is left out.
    """
    height, width = size
    people, valid_heads, ignore = [], [], []
    for k, gtbox in enumerate(record["gtboxes"]):
        at = f"{where}: gtbox {k}"
        if not isinstance(gtbox, dict):
            raise UserError(f"{at}: expected an object, got {gtbox!r}")
        tag = gtbox.get("tag")
        if tag not in ("person", "mask"):
            raise UserError(f"{at}: unknown tag {tag!r} (expected 'person' or 'mask')")
        full = _xyxy(gtbox.get("fbox"), at, "fbox")
        if tag == "mask" or _flag(gtbox, "extra"):
            ignore.append(full)
            continue
        head = gtbox.get("hbox")
        people.append([full, _xyxy(gtbox.get("vbox"), at, "vbox"), full if head is None else _xyxy(head, at, "hbox")])
        valid_heads.append(head is not None and not _flag(gtbox, "head_attr"))
    triplets = _clip(np.array(people, dtype=np.float64).reshape(-1, 3, 4), height, width)  # (N, 3, 4)
    keep = _has_area(triplets[:, 0]) & _has_area(triplets[:, 1])
    head_valid = np.array(valid_heads, dtype=bool) & _has_area(triplets[:, 2])
    triplets, head_valid = triplets[keep], head_valid[keep]
    ignore = _clip(np.array(ignore, dtype=np.float64).reshape(-1, 4), height, width)
    ignore = ignore[_has_area(ignore)]
    annotation = make_annotation(triplets[:, 0], np.zeros(len(triplets), np.int64), ignore,
                                 np.full(len(ignore), -1, np.int64))
    annotation.update(visible_boxes=triplets[:, 1].astype(np.float32), head_boxes=triplets[:, 2].astype(np.float32),
                      head_valid=head_valid)
    return annotation


class CrowdHumanDataset(DetectionDataset):
    """One split of CrowdHuman's standard layout in ``data_dir``, read from its odgt file.

    person_triplets: people as triplets (class ``person`` only); else ``class_names`` (person and/or
    head) with ``body`` ("visible" or "full") as the person box, as ``build_annotations_file.py``.
    Images missing from the folders are skipped with a warning; a split without any is an error.
    A triplet sample carries visible_boxes, head_boxes and head_valid (``DetectionDataset.__getitem__``).
    """

    def __init__(
        self,
        data_dir: str,
        split: str,
        person_triplets: bool = False,
        class_names: Sequence[str] = CROWDHUMAN_CLASSES,
        body: str = "visible",
        transform: "Transform | None" = None,
    ):
        if split not in SPLITS:
            raise UserError(f"CrowdHuman split {split!r} is not one of {', '.join(SPLITS)}")
        self.person_triplets = bool(person_triplets)
        layout = SPLITS[split]
        self.odgt_path = os.path.join(data_dir, layout.odgt)
        if not self.person_triplets:
            converted = convert_split(data_dir, split, list(class_names), body)
            annotations = group_by_image(len(converted.image_ids), converted.box_images, converted.boxes,
                                         converted.labels, converted.is_ignore)
            sources = [f"{self.odgt_path}: image {image_id}" for image_id in converted.image_ids]
            super().__init__(converted.class_names, converted.image_paths, annotations, sources, transform,
                             [tuple(size) for size in converted.image_sizes.tolist()])
            return
        records = read_odgt(self.odgt_path)
        paths_by_id = index_images(data_dir, layout.image_folders)
        found = [(line, record) for line, record in records if record["ID"] in paths_by_id]
        if not found:
            folders = ", ".join(os.path.join(data_dir, folder, "Images") for folder in layout.image_folders)
            raise UserError(f"{self.odgt_path}: none of its {len(records)} images found in {folders}")
        if len(found) < len(records):
            print(f"warning: {self.odgt_path}: {len(records) - len(found)} of {len(records)} images not found; "
                  "skipped")
        image_paths = [paths_by_id[record["ID"]] for _, record in found]
        sources = [f"{self.odgt_path}:{line}" for line, _ in found]
        sizes, annotations = [], []
        progress = tqdm(zip(found, image_paths, sources), total=len(found), disable=len(found) < 2000,
                        desc=f"people ({os.path.basename(self.odgt_path)})", unit="image")
        for (_, record), path, where in progress:
            try:
                size = read_image_size(path)
            except UserError as error:
                raise UserError(f"{where}: {error}") from None
            sizes.append(size)
            annotations.append(person_annotation(record, size, where))
        super().__init__(PERSON_CLASSES, image_paths, annotations, sources, transform, sizes)
