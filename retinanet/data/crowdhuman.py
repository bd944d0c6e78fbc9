"""CrowdHuman's odgt annotations: reading, the image folders, boxes clipped to their images.

The CSV and COCO JSON writers of the conversion (``build_annotations_file.py``) are in
``tools/annotation_writers.py``.

Layout read (``data_dir``)::

    CrowdHuman_train01/Images/<ID>.jpg ... CrowdHuman_train03/Images/<ID>.jpg
    CrowdHuman_val/Images/<ID>.jpg
    annotation_train.odgt, annotation_val.odgt     # one JSON object per line

Each gtbox gives a body box (``vbox`` visible or ``fbox`` full, ``[x, y, w, h]``) and a head
box (``hbox``). ``tag == "mask"`` regions and ``extra.ignore == 1`` people become ignore
regions of the body class; ``head_attr.ignore == 1`` heads become ignore regions of ``head``.
"""
import json
import math
import os
import sys
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from retinanet.data.image_io import read_image_size
from retinanet.data.text_files import read_text_lines
from retinanet.errors import UserError

BODY_CLASS = "person"
HEAD_CLASS = "head"
CROWDHUMAN_CLASSES = (BODY_CLASS, HEAD_CLASS)
BODY_BOX_KEYS = {"visible": "vbox", "full": "fbox"}

# Boxes under a pixel wide or tall after clipping to the image are dropped: they are slivers
# of boxes lying almost entirely outside the image and cannot reach IoU 0.5 with any anchor.
MIN_BOX_SIDE = 1.0


@dataclass(frozen=True)
class SplitLayout:
    odgt: str
    image_folders: "tuple[str, ...]"
    csv_name: str
    json_name: str


SPLITS = {
    "train": SplitLayout(
        "annotation_train.odgt",
        ("CrowdHuman_train01", "CrowdHuman_train02", "CrowdHuman_train03"),
        "train_annotations.csv",
        "train.json",
    ),
    "val": SplitLayout("annotation_val.odgt", ("CrowdHuman_val",), "valid_annotations.csv", "val.json"),
}


@dataclass(frozen=True)
class ConvertedSplit:
    """One odgt file converted: the images found and all their boxes, clipped, in file order.

    image_ids: CrowdHuman IDs; image_paths: resolved paths; image_sizes: (I, 2) H, W.
    box_images: (B,) image index; boxes: (B, 4) x1y1x2y2 clipped to the image;
    labels: (B,) class index; is_ignore: (B,) bool.
    """

    class_names: "list[str]"
    image_ids: "list[str]"
    image_paths: "list[str]"
    image_sizes: np.ndarray
    box_images: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    is_ignore: np.ndarray
    num_dropped: int
    num_people_without_head: int
    missing: "list[tuple[int, str]]"  # (odgt line, ID) of images not found


def read_odgt(path: str) -> "list[tuple[int, dict]]":
    """(line number, record) for every non-blank line of an odgt file, parsed with ``json``."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: CrowdHuman annotation file not found")
    records = []
    for line, text in read_text_lines(path):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{line}: invalid JSON ({error.msg}, column {error.colno})") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{line}: expected a JSON object with 'ID' and 'gtboxes'")
        if not isinstance(record.get("ID"), str) or not record["ID"]:
            raise UserError(f"{path}:{line}: 'ID' is missing or not a string")
        if not isinstance(record.get("gtboxes"), list):
            raise UserError(f"{path}:{line}: 'gtboxes' is missing or not a list")
        records.append((line, record))
    if not records:
        raise UserError(f"{path}: no annotations")
    return records


def index_images(data_dir: str, folders: "tuple[str, ...]") -> "dict[str, str]":
    """CrowdHuman ID -> path of ``<folder>/Images/<ID>.jpg``, from one listing per folder."""
    paths = {}
    for folder in folders:
        images_dir = os.path.join(data_dir, folder, "Images")
        if not os.path.isdir(images_dir):
            continue
        with os.scandir(images_dir) as entries:
            for entry in entries:
                stem, extension = os.path.splitext(entry.name)
                if extension.lower() == ".jpg":
                    paths.setdefault(stem, entry.path)
    return paths


def _is_xywh(box) -> bool:
    return (
        isinstance(box, list) and len(box) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
    )


def _xywh_array(odgt_path: str, boxes: list, sources: "list[tuple[int, int, str]]") -> np.ndarray:
    """(B, 4) float64 from B ``[x, y, w, h]`` lists, checked in one numpy conversion.

    sources: per box (odgt line, gtbox index, key), only read to name the first bad box.
    """
    if not boxes:
        return np.zeros((0, 4), np.float64)
    try:
        array = np.array(boxes)
        valid = array.ndim == 2 and array.shape[1] == 4 and array.dtype.kind in "if"
        valid = valid and bool(np.isfinite(array).all())
    except (ValueError, TypeError):  # ragged lists
        valid = False
    if not valid:
        box, (line, k, key) = next((b, s) for b, s in zip(boxes, sources) if not _is_xywh(b))
        raise UserError(
            f"{odgt_path}:{line}: gtbox {k}: '{key}' must be [x, y, width, height] numbers, got {box!r}"
        )
    return array.astype(np.float64).reshape(-1, 4)


def _flag(gtbox: dict, key: str) -> bool:
    """``gtbox[key]['ignore'] == 1``; real files omit the key (or the whole dict) when 0."""
    attributes = gtbox.get(key)
    return isinstance(attributes, dict) and attributes.get("ignore", 0) == 1


def convert_records(
    odgt_path: str,
    records: "list[tuple[int, dict]]",
    image_paths_by_id: "dict[str, str]",
    class_names: "list[str]",
    body: str = "visible",
) -> ConvertedSplit:
    """Turn parsed odgt records into clipped boxes of the classes in ``class_names``.

    Records whose image is not in ``image_paths_by_id`` are skipped and listed in ``missing``.
    """
    label_of = {name: label for label, name in enumerate(class_names)}
    body_label, head_label = label_of.get(BODY_CLASS), label_of.get(HEAD_CLASS)
    body_key = BODY_BOX_KEYS[body]
    image_ids, image_paths, missing = [], [], []
    num_people_without_head = 0
    box_images, xywh, labels, is_ignore, sources = [], [], [], [], []
    for line, record in records:
        path = image_paths_by_id.get(record["ID"])
        if path is None:
            missing.append((line, record["ID"]))
            continue
        image = len(image_ids)
        image_ids.append(record["ID"])
        image_paths.append(path)
        for k, gtbox in enumerate(record["gtboxes"]):
            if not isinstance(gtbox, dict):
                raise UserError(f"{odgt_path}:{line}: gtbox {k}: expected an object, got {gtbox!r}")
            tag = gtbox.get("tag")
            if tag not in ("person", "mask"):
                raise UserError(
                    f"{odgt_path}:{line}: gtbox {k}: unknown tag {tag!r} (expected 'person' or 'mask')"
                )
            if body_label is not None:
                box_images.append(image)
                xywh.append(gtbox.get(body_key))
                labels.append(body_label)
                is_ignore.append(tag == "mask" or _flag(gtbox, "extra"))
                sources.append((line, k, body_key))
            if head_label is not None and tag == "person":
                if "hbox" in gtbox:
                    box_images.append(image)
                    xywh.append(gtbox["hbox"])
                    labels.append(head_label)
                    is_ignore.append(_flag(gtbox, "head_attr"))
                    sources.append((line, k, "hbox"))
                else:
                    num_people_without_head += 1

    progress = tqdm(image_paths, desc=f"image sizes ({os.path.basename(odgt_path)})")
    image_sizes = np.array([read_image_size(path) for path in progress], dtype=np.int64).reshape(-1, 2)
    box_images = np.array(box_images, dtype=np.int64)
    xywh = _xywh_array(odgt_path, xywh, sources)
    # (B,) height and width of each box's image
    heights, widths = image_sizes[box_images, 0], image_sizes[box_images, 1]
    boxes = np.stack([
        np.clip(xywh[:, 0], 0, widths),
        np.clip(xywh[:, 1], 0, heights),
        np.clip(xywh[:, 0] + xywh[:, 2], 0, widths),
        np.clip(xywh[:, 1] + xywh[:, 3], 0, heights),
    ], axis=1)
    keep = (boxes[:, 2] - boxes[:, 0] >= MIN_BOX_SIDE) & (boxes[:, 3] - boxes[:, 1] >= MIN_BOX_SIDE)
    return ConvertedSplit(
        class_names=list(class_names),
        image_ids=image_ids,
        image_paths=image_paths,
        image_sizes=image_sizes,
        box_images=box_images[keep],
        boxes=boxes[keep],
        labels=np.array(labels, dtype=np.int64)[keep],
        is_ignore=np.array(is_ignore, dtype=bool)[keep],
        num_dropped=int((~keep).sum()),
        num_people_without_head=num_people_without_head,
        missing=missing,
    )


def convert_split(
    data_dir: str, split_name: str, class_names: "list[str]", body: str = "visible"
) -> ConvertedSplit:
    """Read and convert one split of the standard layout in ``data_dir`` (nothing is written).

    Missing images are skipped with a one-line warning on stderr; a split with no image at
    all is a ``UserError``.
    """
    layout = SPLITS[split_name]
    odgt_path = os.path.join(data_dir, layout.odgt)
    records = read_odgt(odgt_path)
    image_paths_by_id = index_images(data_dir, layout.image_folders)
    split = convert_records(odgt_path, records, image_paths_by_id, class_names, body)
    folders = ", ".join(os.path.join(data_dir, folder, "Images") for folder in layout.image_folders)
    if split.missing:
        line, image_id = split.missing[0]
        message = (
            f"warning: {odgt_path}: {len(split.missing)} of {len(records)} images not found in {folders}; "
            f"skipped (first: line {line}, ID {image_id!r})"
        )
        print(message, file=sys.stderr)
    if not split.image_ids:
        raise UserError(f"{odgt_path}: none of its {len(records)} images found in {folders}")
    return split
