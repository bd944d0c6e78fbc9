"""Ground truth straight from a CrowdHuman odgt file, read the way the official evaluation reads it.

Results of any detector can then be scored without converting the annotations first::

    python csv_validation.py --odgt data/CrowdHuman/annotation_val.odgt --crowdhuman_box full \
        --detections crowddet_results.json

Every gtbox of a record counts, as in CrowdDet's ``Image.load_gt_boxes`` (nothing is dropped,
unlike ``build_annotations_file.py``, which trains on what it keeps):

* ``person`` gets the body box (``fbox`` for ``full``, ``vbox`` for ``visible``). It is valid
  when the tag is ``person`` and ``extra.ignore`` is absent or 0, an ignore region otherwise
  (``tag == "mask"`` regions and ``extra.ignore`` people);
* ``head`` gets the ``hbox`` of every gtbox: valid when the body is valid and
  ``head_attr.ignore`` is absent or 0, an ignore region otherwise (so the heads of masks and
  of ignored people are ignored too).

Boxes ``[x, y, w, h]`` become ``x1y1x2y2 = (x, y, x + w, y + h)`` in float64, then are clipped
to the image the official way (``crowdhuman.clip_boundary``: x1 to [0, W - 1], x2 to [0, W]).
Image sizes come, as in the official code, from the odgt record's ``height`` and ``width``
when it has them, else from the detection record's (CrowdDet's results carry them); only
images with neither are read, from ``--images_dir``.
"""

import math
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from tqdm import tqdm

from retinanet.data.crowdhuman import BODY_BOX_KEYS, BODY_CLASS, HEAD_CLASS, SPLITS, index_images, read_odgt
from retinanet.data.image_io import read_image_size
from retinanet.errors import UserError
from retinanet.evaluation.crowdhuman import record_image_size
from retinanet.evaluation.matching import xywh_to_xyxy

CROWDHUMAN_BOXES = ("full", "visible", "head")
# The class of each box kind: what the untagged boxes (tag 1) of an official result file are.
EVALUATED_CLASS = {"full": BODY_CLASS, "visible": BODY_CLASS, "head": HEAD_CLASS}

ImageSize = "tuple[int, int]"


@dataclass(frozen=True)
class OdgtGroundTruth:
    """An odgt file read for one box kind, in file order.

    image_ids (I,): CrowdHuman IDs; sources (I,): ``path:line`` of each record;
    annotations (I,): {boxes (N, 4) float64 x1y1x2y2 not clipped yet, labels (N,),
    ignore (M, 4) float64, ignore_labels (M,)}, each class's boxes in gtbox order;
    image_sizes (I,): (H, W) from the record's ``height`` and ``width``, else None.
    """

    class_names: "list[str]"
    image_ids: "list[str]"
    sources: "list[str]"
    annotations: "list[dict[str, np.ndarray]]"
    image_sizes: "list[Optional[ImageSize]]"


def index_image_folder(images_dir: str) -> "dict[str, str]":
    """CrowdHuman ID -> path of ``<ID>.jpg``, found directly in ``images_dir`` or in the standard
    layout below it (``Images/``, ``CrowdHuman_val/Images/``, ``CrowdHuman_train01/Images/``, ...).

    A file directly in ``images_dir`` wins over one of the same ID further down.
    """
    if not os.path.isdir(images_dir):
        raise UserError(f"{images_dir}: images folder not found")
    paths = {}
    with os.scandir(images_dir) as entries:
        for entry in entries:
            stem, extension = os.path.splitext(entry.name)
            if extension.lower() == ".jpg":
                paths[stem] = entry.path
    # "" looks in images_dir/Images, the split folders in images_dir/<split folder>/Images.
    folders = ("", *(folder for layout in SPLITS.values() for folder in layout.image_folders))
    for image_id, path in index_images(images_dir, folders).items():
        paths.setdefault(image_id, path)
    return paths


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _ignore_flag(gtbox: dict, key: str, where: str) -> bool:
    """``gtbox[key]["ignore"] != 0``, the official test; files omit the key (or the dict) for 0."""
    attributes = gtbox.get(key, {})
    if not isinstance(attributes, dict):
        raise UserError(f"{where}: '{key}' must be an object, got {attributes!r}")
    return attributes.get("ignore", 0) != 0


def _box(gtbox: dict, key: str, where: str) -> list:
    box = gtbox.get(key)
    if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
        raise UserError(f"{where}: '{key}' must be [x, y, width, height] numbers, got {box!r}")
    if box[2] < 0 or box[3] < 0:
        raise UserError(f"{where}: '{key}' {box} has a negative width or height")
    return box


def read_odgt_ground_truth(
    odgt_path: str, class_names: Sequence[str], box: str, records: "Optional[list[tuple[int, dict]]]" = None
) -> OdgtGroundTruth:
    """Every image of ``odgt_path`` with the boxes of ``class_names``' person and head (module docstring).

    box: "full" or "visible" (the body box of ``person``; heads too when ``head`` is a class),
    or "head" (heads only). records: ``read_odgt(odgt_path)`` when the caller has read it already.
    Any problem is a UserError naming the file and line.
    """
    if box not in CROWDHUMAN_BOXES:
        raise UserError(f"CrowdHuman box {box!r} is not one of {', '.join(CROWDHUMAN_BOXES)}")
    class_names = list(class_names)
    wanted = (HEAD_CLASS,) if box == "head" else (BODY_CLASS, HEAD_CLASS)
    labels = {name: class_names.index(name) for name in wanted if name in class_names}
    if not labels:
        shown = ", ".join(class_names[:10]) + (", ..." if len(class_names) > 10 else "")
        raise UserError(
            f"--crowdhuman_box {box} scores class {' or '.join(repr(name) for name in wanted)}, and the "
            f"class list ({shown}) has neither"
        )
    keys = {BODY_CLASS: BODY_BOX_KEYS.get(box), HEAD_CLASS: "hbox"}
    image_ids, sources, annotations, sizes, first_line = [], [], [], [], {}
    for line, record in records if records is not None else read_odgt(odgt_path):
        where = f"{odgt_path}:{line}"
        if record["ID"] in first_line:
            raise UserError(f"{where}: image {record['ID']!r} again (first on line {first_line[record['ID']]})")
        first_line[record["ID"]] = line
        try:
            sizes.append(record_image_size(record))
        except ValueError as error:
            raise UserError(f"{where}: {error}") from None
        boxes = {name: ([], []) for name in labels}  # name -> (valid boxes, ignored boxes)
        for k, gtbox in enumerate(record["gtboxes"]):
            at = f"{where}: gtbox {k}"
            if not isinstance(gtbox, dict):
                raise UserError(f"{at}: expected an object, got {gtbox!r}")
            if gtbox.get("tag") not in ("person", "mask"):
                raise UserError(f"{at}: unknown tag {gtbox.get('tag')!r} (expected 'person' or 'mask')")
            body_valid = gtbox["tag"] == "person" and not _ignore_flag(gtbox, "extra", at)
            valid = {BODY_CLASS: body_valid, HEAD_CLASS: body_valid and not _ignore_flag(gtbox, "head_attr", at)}
            for name in labels:
                boxes[name][0 if valid[name] else 1].append(_box(gtbox, keys[name], at))
        image_ids.append(record["ID"])
        sources.append(where)
        annotations.append({
            "boxes": xywh_to_xyxy([b for name in labels for b in boxes[name][0]]),
            "labels": np.repeat(list(labels.values()), [len(boxes[name][0]) for name in labels]).astype(np.int64),
            "ignore": xywh_to_xyxy([b for name in labels for b in boxes[name][1]]),
            "ignore_labels": np.repeat(
                list(labels.values()), [len(boxes[name][1]) for name in labels]
            ).astype(np.int64),
        })
    return OdgtGroundTruth(class_names, image_ids, sources, annotations, sizes)


def find_images(truth: OdgtGroundTruth, images_dir: str) -> "list[str]":
    """Path of every image of ``truth`` in ``images_dir`` (``index_image_folder``); a missing one is a
    UserError: scores over part of a set are not the set's scores."""
    paths_by_id = index_image_folder(images_dir)
    missing = [index for index, image_id in enumerate(truth.image_ids) if image_id not in paths_by_id]
    if missing:
        raise UserError(
            f"{truth.sources[missing[0]]}: image {truth.image_ids[missing[0]]}.jpg not found in {images_dir} "
            f"({len(missing)} of {len(truth.image_ids)} images are missing)"
        )
    return [paths_by_id[image_id] for image_id in truth.image_ids]


def resolve_image_sizes(
    truth: OdgtGroundTruth,
    detection_sizes: "Optional[Sequence[Optional[ImageSize]]]" = None,
    image_paths: "Optional[Sequence[str]]" = None,
) -> "list[ImageSize]":
    """(H, W) per image: the odgt record's, else the detection record's, else the image file's header.

    detection_sizes: (I,) sizes from the detection records, None where a record has none;
    image_paths: (I,) image files, or None when there are none (then every image needs a size
    from a record, else a UserError).
    """
    sizes = list(truth.image_sizes)
    for index, size in enumerate(sizes):
        if size is None and detection_sizes is not None:
            sizes[index] = detection_sizes[index]
    unknown = [index for index, size in enumerate(sizes) if size is None]
    if unknown and image_paths is None:
        raise UserError(
            f"{truth.sources[unknown[0]]}: no size for image {truth.image_ids[unknown[0]]!r}: neither its odgt "
            f"record nor its detection record has height and width ({len(unknown)} such images); "
            "give --images_dir to read them from the images"
        )
    for index in tqdm(unknown, desc="image sizes", unit="image", disable=not unknown):
        sizes[index] = read_image_size(image_paths[index])
    return sizes
