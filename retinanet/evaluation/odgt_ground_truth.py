"""Ground truth straight from a CrowdHuman odgt file and its images, as a dataset.

Results of any detector can then be scored without converting the annotations first::

    python csv_validation.py --odgt data/CrowdHuman/annotation_val.odgt \
        --images_dir data/CrowdHuman/CrowdHuman_val/Images --crowdhuman_box full \
        --detections crowddet_results.json --untagged_class person

The boxes are exactly those ``build_annotations_file.py`` writes for the same class list
(``retinanet.data.crowdhuman.convert_records``): ``person`` is the full or visible body
box, ``head`` the head box; ``tag == "mask"`` regions and ``extra.ignore == 1`` people are
ignore regions of ``person``, ``head_attr.ignore == 1`` heads ignore regions of ``head``;
boxes are clipped to the image and those under a pixel wide or tall afterwards are
dropped. Images are read only for their sizes (from the file header).
"""

import os
from typing import Sequence

import numpy as np

from retinanet.data.crowdhuman import (
    BODY_CLASS,
    HEAD_CLASS,
    SPLITS,
    convert_records,
    index_images,
    read_odgt,
)
from retinanet.data.dataset import DetectionDataset, group_by_image
from retinanet.data.transforms import Transform
from retinanet.errors import UserError

# Which odgt box becomes the evaluated class: a body box for "person" (heads too when the
# class list has "head"), or heads alone.
CROWDHUMAN_BOXES = ("full", "visible", "head")


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


def odgt_dataset(
    odgt_path: str,
    images_dir: str,
    class_names: Sequence[str],
    box: str = "full",
    transform: "Transform | None" = None,
) -> DetectionDataset:
    """A dataset of every image of ``odgt_path``, in file order, labelled for ``class_names``.

    class_names: the evaluation's class list; its ``person`` and ``head`` entries receive the
    CrowdHuman boxes (other classes get none). box: "full" or "visible" (the body box used for
    ``person``; heads as well when ``head`` is a class), or "head" (heads only). An image of
    the odgt that is not in ``images_dir`` is a UserError: scores over part of a set are not
    the set's scores. Image sizes come from the image headers, read once here.
    """
    if box not in CROWDHUMAN_BOXES:
        raise UserError(f"CrowdHuman box {box!r} is not one of {', '.join(CROWDHUMAN_BOXES)}")
    class_names = list(class_names)
    wanted = (HEAD_CLASS,) if box == "head" else (BODY_CLASS, HEAD_CLASS)
    if not any(name in class_names for name in wanted):
        shown = ", ".join(class_names[:10]) + (", ..." if len(class_names) > 10 else "")
        raise UserError(
            f"--crowdhuman_box {box} scores class {' or '.join(repr(name) for name in wanted)}, and the "
            f"class list ({shown}) has neither"
        )
    records = read_odgt(odgt_path)
    image_paths_by_id = index_image_folder(images_dir)
    # convert_records needs a body box even when only heads are kept; which one does not matter then.
    body = "visible" if box == "head" else box
    split = convert_records(odgt_path, records, image_paths_by_id, class_names, body)
    if split.missing:
        line, image_id = split.missing[0]
        raise UserError(
            f"{odgt_path}:{line}: image {image_id}.jpg not found in {images_dir} "
            f"({len(split.missing)} of {len(records)} images are missing)"
        )
    keep = np.ones(len(split.labels), dtype=bool)
    if box == "head" and BODY_CLASS in class_names:
        keep = split.labels != class_names.index(BODY_CLASS)
    annotations = group_by_image(
        len(split.image_ids),
        split.box_images[keep],
        split.boxes[keep],
        split.labels[keep],
        split.is_ignore[keep],
    )
    sources = [f"{odgt_path}:{line}" for line, _ in records]
    sizes = [(int(height), int(width)) for height, width in split.image_sizes.tolist()]
    return DetectionDataset(class_names, split.image_paths, annotations, sources, transform, sizes)
