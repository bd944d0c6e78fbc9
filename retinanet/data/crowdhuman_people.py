"""CrowdHuman straight from its odgt files, for training: people as triplets, or person and head boxes.

``train.py --dataset crowdhuman --crowdhuman_path DIR`` reads the standard layout of
``retinanet.data.crowdhuman`` (``annotation_train.odgt``, ``CrowdHuman_train01..03/Images``, ...).

With ``person_triplets`` every annotated person is one object with three boxes, from its ``fbox``,
``vbox`` and ``hbox``, clipped to the image. The ignore rules are the official evaluation's:

- a ``tag == "mask"`` region and a person with ``extra.ignore == 1`` are ignore regions (their
  full box): anchors inside them are left out of the loss;
- a person whose head has ``head_attr.ignore == 1`` (or no ``hbox``, or a head outside the
  image) stays a person, and only its head box is not trained (``head_valid`` False).

With ``head`` among the class names as well, every head is also an object of its own (class 1, as
``build_annotations_file.py`` writes heads: every ``person`` gtbox's ``hbox``, a ``head_attr.ignore``
one as an ignore region of class head). A person-triplet model detects these heads on head-sized
anchors and gives each person the head detection its regressed head overlaps best
(``postprocess.attach_heads``). A head row has ``visible_valid`` and ``head_valid`` False: only its
box is trained.

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
    HEAD_CLASS,
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
# A person-triplet set whose heads are also objects of their own: persons are class 0, heads class 1.
PERSON_AND_HEAD_CLASSES = (BODY_CLASS, HEAD_CLASS)


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


def person_annotation(record: dict, size: "tuple[int, int]", where: str,
                      heads: bool = False) -> "dict[str, np.ndarray]":
    """One odgt record's people as triplets, in original pixels (module docstring for the rules).

    Returns ``make_annotation``'s dict (boxes (N, 4) full bodies, labels (N,) zeros, ignore (M, 4),
    ignore_labels (M,) -1) plus visible_boxes (N, 4), head_boxes (N, 4), visible_valid (N,) and
    head_valid (N,) bool. A person whose full or visible box is under a pixel inside the image is
    left out. heads: the heads follow the people as rows of class 1 (their box in all three columns,
    only the first trained), and ignored heads are ignore regions of class 1.
    """
    height, width = size
    people, valid_heads, ignore, head_rows, ignored_heads = [], [], [], [], []
    for k, gtbox in enumerate(record["gtboxes"]):
        at = f"{where}: gtbox {k}"
        if not isinstance(gtbox, dict):
            raise UserError(f"{at}: expected an object, got {gtbox!r}")
        tag = gtbox.get("tag")
        if tag not in ("person", "mask"):
            raise UserError(f"{at}: unknown tag {tag!r} (expected 'person' or 'mask')")
        full = _xyxy(gtbox.get("fbox"), at, "fbox")
        head = gtbox.get("hbox")
        if heads and tag == "person" and head is not None:
            (ignored_heads if _flag(gtbox, "head_attr") else head_rows).append(_xyxy(head, at, "hbox"))
        if tag == "mask" or _flag(gtbox, "extra"):
            ignore.append(full)
            continue
        people.append([full, _xyxy(gtbox.get("vbox"), at, "vbox"), full if head is None else _xyxy(head, at, "hbox")])
        valid_heads.append(head is not None and not _flag(gtbox, "head_attr"))
    triplets = _clip(np.array(people, dtype=np.float64).reshape(-1, 3, 4), height, width)  # (N, 3, 4)
    keep = _has_area(triplets[:, 0]) & _has_area(triplets[:, 1])
    head_valid = np.array(valid_heads, dtype=bool) & _has_area(triplets[:, 2])
    triplets, head_valid = triplets[keep], head_valid[keep]
    labels, visible_valid = np.zeros(len(triplets), np.int64), np.ones(len(triplets), dtype=bool)
    head_rows = _clip(np.array(head_rows, dtype=np.float64).reshape(-1, 4), height, width)
    head_rows = head_rows[_has_area(head_rows)]
    if len(head_rows):
        triplets = np.concatenate([triplets, np.repeat(head_rows[:, None], 3, axis=1)])
        labels = np.concatenate([labels, np.ones(len(head_rows), np.int64)])
        no = np.zeros(len(head_rows), dtype=bool)
        head_valid, visible_valid = np.concatenate([head_valid, no]), np.concatenate([visible_valid, no])
    # ignore regions: every class (-1) for masks and ignored people, class head (1) for ignored heads
    regions = [_clip(np.array(boxes, dtype=np.float64).reshape(-1, 4), height, width)
               for boxes in (ignore, ignored_heads)]
    regions = [r[_has_area(r)] for r in regions]
    region_labels = [np.full(len(r), label, np.int64) for r, label in zip(regions, (-1, 1))]
    annotation = make_annotation(triplets[:, 0], labels, np.concatenate(regions), np.concatenate(region_labels))
    annotation.update(visible_boxes=triplets[:, 1].astype(np.float32), head_boxes=triplets[:, 2].astype(np.float32),
                      visible_valid=visible_valid, head_valid=head_valid)
    return annotation


class CrowdHumanDataset(DetectionDataset):
    """One split of CrowdHuman's standard layout in ``data_dir``, read from its odgt file.

    person_triplets: people as triplets (class ``person``), and their heads as class ``head`` when
    ``class_names`` has it; else ``class_names`` (person and/or head) with ``body`` ("visible" or
    "full") as the person box, as ``build_annotations_file.py``.
    Images missing from the folders are skipped with a warning; a split without any is an error.
    A triplet sample carries visible_boxes, head_boxes, visible_valid and head_valid
    (``DetectionDataset.__getitem__``).
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
        heads = HEAD_CLASS in class_names
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
            annotations.append(person_annotation(record, size, where, heads))
        super().__init__(PERSON_AND_HEAD_CLASSES if heads else PERSON_CLASSES, image_paths, annotations, sources,
                         transform, sizes)
