"""Writers of a converted CrowdHuman split: the CSV annotation file and COCO-style JSON, and its summary.

Used by ``build_annotations_file.py``; reading and clipping are ``retinanet.data.crowdhuman``.
"""
import csv
import json
import os

import numpy as np

from retinanet.data.class_list import IGNORE_CLASS
from retinanet.data.crowdhuman import MIN_BOX_SIDE, SPLITS, ConvertedSplit
from retinanet.io_utils import atomic_open


def _number(value: float) -> str:
    # 10 significant digits: exact for any pixel coordinate, and "245" rather than "245.0".
    return f"{value:.10g}"


def write_csv(path: str, split: ConvertedSplit, delimiter: str = ",") -> None:
    """Write ``split`` as a CSV annotation file, image paths relative to the file's folder.

    Images without boxes get a ``path,,,,,`` row so they stay in the dataset as negatives.
    """
    folder = os.path.dirname(os.path.abspath(path))
    starts = np.searchsorted(split.box_images, np.arange(len(split.image_ids) + 1)).tolist()
    # (B,) strings and lists once, rather than numpy scalars per box
    names = [
        f"{IGNORE_CLASS}:{split.class_names[label]}" if ignore else split.class_names[label]
        for label, ignore in zip(split.labels.tolist(), split.is_ignore.tolist())
    ]
    boxes = split.boxes.tolist()
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
        for image, image_path in enumerate(split.image_paths):
            relative = os.path.relpath(image_path, folder)
            start, end = starts[image], starts[image + 1]
            if start == end:
                writer.writerow([relative, "", "", "", "", ""])
            writer.writerows([relative, *map(_number, boxes[i]), names[i]] for i in range(start, end))


def write_coco_json(path: str, split: ConvertedSplit) -> None:
    """Write ``split`` in COCO format: category id = class index + 1, ignore regions ``iscrowd=1``.

    ``file_name`` is relative to the JSON file's folder; ``crowdhuman_id`` keeps the original ID.
    """
    folder = os.path.dirname(os.path.abspath(path))
    images = [
        {"id": index + 1, "file_name": os.path.relpath(image_path, folder), "height": int(height),
         "width": int(width), "crowdhuman_id": image_id}
        for index, (image_id, image_path, (height, width)) in enumerate(
            zip(split.image_ids, split.image_paths, split.image_sizes.tolist())
        )
    ]
    xywh = np.concatenate([split.boxes[:, :2], split.boxes[:, 2:] - split.boxes[:, :2]], axis=1)
    annotations = [
        {"id": n + 1, "image_id": image + 1, "category_id": label + 1, "bbox": box,
         "area": box[2] * box[3], "iscrowd": int(ignore)}
        for n, (image, label, box, ignore) in enumerate(zip(
            split.box_images.tolist(), split.labels.tolist(), xywh.tolist(), split.is_ignore.tolist()
        ))
    ]
    categories = [
        {"id": label + 1, "name": name, "supercategory": "person"}
        for label, name in enumerate(split.class_names)
    ]
    info = {"description": "CrowdHuman converted by retinanet build_annotations_file.py"}
    coco = {"info": info, "images": images, "annotations": annotations, "categories": categories}
    # json.dumps, not json.dump: only dumps uses the C encoder (seconds, not half a minute, for 440k boxes).
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(coco))


def summarize(name: str, split: ConvertedSplit) -> str:
    """A few lines: images, boxes and ignore regions per class, dropped boxes, missing images."""
    num_classes = len(split.class_names)
    objects = np.bincount(split.labels[~split.is_ignore], minlength=num_classes)
    ignores = np.bincount(split.labels[split.is_ignore], minlength=num_classes)
    per_class = ", ".join(
        f"{class_name} {objects[label]} (+{ignores[label]} ignore)"
        for label, class_name in enumerate(split.class_names)
    )
    lines = [
        f"{name}: {len(split.image_ids)} images, {len(split.missing)} missing (skipped)",
        f"  boxes: {per_class}",
        f"  dropped after clipping (under {MIN_BOX_SIDE:g} px): {split.num_dropped}",
    ]
    if split.num_people_without_head:
        lines.append(f"  people without a head box: {split.num_people_without_head}")
    return "\n".join(lines)


def write_split(output_dir: str, split_name: str, split: ConvertedSplit, delimiter: str = ",") -> None:
    """Write a converted split as its CSV annotation file and COCO JSON into ``output_dir``."""
    layout = SPLITS[split_name]
    write_csv(os.path.join(output_dir, layout.csv_name), split, delimiter)
    write_coco_json(os.path.join(output_dir, layout.json_name), split)
