"""The official COCO layout: ``<root>/annotations/instances_<set>.json`` and ``<root>/images/<set>/``."""
import os

import numpy as np

from retinanet.data.class_list import check_class_names
from retinanet.data.dataset import DetectionDataset, group_by_image
from retinanet.data.text_files import load_json
from retinanet.data.transforms import Transform
from retinanet.errors import UserError

# Boxes narrower or shorter than a pixel are dropped for training (as pytorch-retinanet does):
# they cannot reach IoU 0.5 with any anchor. COCO evaluation still sees them through the JSON.
MIN_COCO_BOX_SIDE = 1.0


def _find_image_dir(root: str, set_name: str) -> str:
    candidates = [os.path.join(root, "images", set_name), os.path.join(root, set_name)]
    for candidate in candidates:
        if os.path.isdir(candidate):
            return candidate
    raise UserError(
        f"COCO images for {set_name!r} not found: neither {candidates[0]} nor {candidates[1]} exists"
    )


def _records(data, key: str, path: str) -> list:
    records = data.get(key) if isinstance(data, dict) else None
    if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
        raise UserError(f"{path}: '{key}' must be a list of objects")
    return records


def _field(record: dict, key: str, kind: type, where: str):
    value = record.get(key)
    # bool is an int subclass; a true/false id is a broken file, not id 1/0.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UserError(f"{where}: '{key}' is missing or not {'an integer' if kind is int else 'a string'}")
    return value


class CocoDataset(DetectionDataset):
    """A COCO-format set: labels are the categories in increasing id order.

    Args:
        root: folder holding ``annotations/`` and ``images/<set_name>/`` (or ``<set_name>/``).
        set_name: e.g. ``train2017``, ``val2017``.
        transform: see ``DetectionDataset``.

    ``iscrowd`` boxes become ignore regions of their category. Attributes beside the common
    interface: ``category_ids`` (label -> COCO category id), ``image_ids`` (dataset index ->
    COCO image id), ``annotation_file``, ``num_dropped_boxes`` (boxes under a pixel wide or tall).
    """

    def __init__(
        self, root: "str | os.PathLike", set_name: str = "val2017", transform: "Transform | None" = None
    ):
        root = os.fspath(root)
        path = os.path.join(root, "annotations", f"instances_{set_name}.json")
        if not os.path.isfile(path):
            raise UserError(f"{path}: COCO annotation file not found")
        image_dir = _find_image_dir(root, set_name)
        data = load_json(path)

        categories = sorted(
            (_field(category, "id", int, f"{path}: category #{n}"),
             _field(category, "name", str, f"{path}: category #{n}"))
            for n, category in enumerate(_records(data, "categories", path))
        )
        category_ids = [category_id for category_id, _ in categories]
        if len(set(category_ids)) != len(category_ids):
            raise UserError(f"{path}: duplicate category ids")
        try:
            class_names = check_class_names(name for _, name in categories)
        except UserError as error:
            raise UserError(f"{path}: categories in id order: {error}") from None
        label_of_category = {category_id: label for label, category_id in enumerate(category_ids)}

        image_ids, image_paths, image_sizes, missing = [], [], [], []
        for n, image in enumerate(_records(data, "images", path)):
            where = f"{path}: image #{n}"
            image_id = _field(image, "id", int, where)
            file_name = _field(image, "file_name", str, where)
            height, width = image.get("height"), image.get("width")
            stated = isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0
            image_ids.append(image_id)
            image_paths.append(os.path.join(image_dir, file_name))
            image_sizes.append((height, width) if stated else None)
            if not os.path.isfile(image_paths[-1]):
                missing.append((image_id, image_paths[-1]))
        if missing:
            raise UserError(
                f"{path}: image id {missing[0][0]}: {missing[0][1]} not found "
                f"({len(missing)} of {len(image_ids)} images are missing)"
            )
        index_of_image = {image_id: index for index, image_id in enumerate(image_ids)}
        if len(index_of_image) != len(image_ids):
            raise UserError(f"{path}: duplicate image ids")

        annotation_records = _records(data, "annotations", path)
        box_images = np.empty(len(annotation_records), dtype=np.int64)
        labels = np.empty(len(annotation_records), dtype=np.int64)
        xywh = np.empty((len(annotation_records), 4), dtype=np.float64)
        is_crowd = np.empty(len(annotation_records), dtype=bool)
        for n, annotation in enumerate(annotation_records):
            where = f"{path}: annotation #{n} (id {annotation.get('id')})"
            image_id = _field(annotation, "image_id", int, where)
            category_id = _field(annotation, "category_id", int, where)
            bbox = annotation.get("bbox")
            if image_id not in index_of_image:
                raise UserError(f"{where}: image_id {image_id} is not in 'images'")
            if category_id not in label_of_category:
                raise UserError(f"{where}: category_id {category_id} is not in 'categories'")
            if not (isinstance(bbox, list) and len(bbox) == 4
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
                raise UserError(f"{where}: 'bbox' must be [x, y, width, height], got {bbox!r}")
            box_images[n] = index_of_image[image_id]
            labels[n] = label_of_category[category_id]
            xywh[n] = bbox
            is_crowd[n] = bool(annotation.get("iscrowd", 0))

        keep = np.isfinite(xywh).all(axis=1) & (xywh[:, 2:] >= MIN_COCO_BOX_SIDE).all(axis=1)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        annotations = group_by_image(
            len(image_ids), box_images[keep], boxes[keep], labels[keep], is_crowd[keep]
        )
        super().__init__(
            class_names,
            image_paths,
            annotations,
            [f"{path}: image id {image_id}" for image_id in image_ids],
            transform,
            image_sizes,
        )
        self.category_ids = category_ids
        self.image_ids = image_ids
        self.annotation_file = path
        self.num_dropped_boxes = int((~keep).sum())
