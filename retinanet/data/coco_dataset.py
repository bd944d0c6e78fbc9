"""COCO under one root, in either layout its downloads come in (found automatically).

- official: ``annotations/instances_<set>.json``, images in ``images/<set>/`` (or ``<set>/``);
- YOLO-style (the COCO download scripts of YOLO projects): images in ``images/<set>/``, one
  ``labels/<set>/<image name>.txt`` per image with rows ``class cx cy w h`` (fractions of the
  image width and height, class 0..79 in the order of ``COCO_CLASS_NAMES``), and optionally
  ``<set>.txt`` at the root listing the images (``./images/<set>/000000000139.jpg``).
"""
import os
import sys
from dataclasses import dataclass

import numpy as np

from retinanet.coco_names import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from retinanet.data.class_list import check_class_names
from retinanet.data.dataset import DetectionDataset, group_by_image, reports_start_up, start_up_progress
from retinanet.data.image_io import has_image_extension, read_image_size
from retinanet.data.text_files import load_json, read_text_lines
from retinanet.data.transforms import Transform
from retinanet.errors import UserError

# Boxes narrower or shorter than a pixel are dropped for training (as pytorch-retinanet does):
# they cannot reach IoU 0.5 with any anchor. COCO evaluation still sees them.
MIN_COCO_BOX_SIDE = 1.0

_YOLO_ROW = "class cx cy w h"
# Parsing is one step without progress to show (about 30 MB/s): larger files get a line saying so.
_LARGE_JSON_BYTES = 100_000_000


@dataclass
class _CocoSet:
    """One set as read from either layout.

    Per image (I): ids, paths, sizes ((H, W), or None where the file does not state it), sources.
    Per box (B): box_images (B,), boxes (B, 4) x1y1x2y2 pixels, labels (B,), is_crowd (B,).
    """

    annotation_file: str
    class_names: "list[str]"
    category_ids: "list[int]"
    image_ids: "list[int]"
    image_paths: "list[str]"
    image_sizes: "list[tuple[int, int] | None]"
    sources: "list[str]"
    box_images: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    is_crowd: np.ndarray


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


def _check_annotation(annotation: dict, where: str, index_of_image: dict, label_of_category: dict) -> None:
    """Raise the ``UserError`` that says what is wrong with one annotation record, if anything."""
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


def _convert_annotations(records: "list[dict]", index_of_image: dict, label_of_category: dict):
    """(B,) image index, (B,) label, (B, 4) xywh, (B,) iscrowd of valid records, else None.

    Checked list-wide, on the sets of ids and of value types (COCO train has 860k records);
    ``_check_annotation`` names the problem when this refuses.
    """
    try:
        image_ids = [record["image_id"] for record in records]
        category_ids = [record["category_id"] for record in records]
        bboxes = [record["bbox"] for record in records]
    except KeyError:
        return None
    id_types = set(map(type, image_ids)) | set(map(type, category_ids))
    if not (id_types <= {int} and set(image_ids) <= index_of_image.keys()
            and set(category_ids) <= label_of_category.keys() and set(map(type, bboxes)) <= {list}
            and set(map(len, bboxes)) <= {4}
            and {type(value) for bbox in bboxes for value in bbox} <= {int, float}):
        return None
    return (
        np.fromiter(map(index_of_image.__getitem__, image_ids), dtype=np.int64, count=len(records)),
        np.fromiter(map(label_of_category.__getitem__, category_ids), dtype=np.int64, count=len(records)),
        np.array(bboxes, dtype=np.float64).reshape(-1, 4),
        np.array([bool(record.get("iscrowd", 0)) for record in records], dtype=bool).reshape(-1),
    )


def _read_official(path: str, root: str, set_name: str) -> _CocoSet:
    """The ``instances_<set>.json`` layout: labels are the categories in increasing id order."""
    image_dir = _find_image_dir(root, set_name)
    size = os.path.getsize(path)
    if size >= _LARGE_JSON_BYTES and reports_start_up():
        print(f"parsing {path} ({size / 1e6:.0f} MB)", file=sys.stderr, flush=True)
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
    image_records = _records(data, "images", path)
    for n, image in enumerate(start_up_progress(image_records, f"images ({os.path.basename(path)})")):
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
    converted = _convert_annotations(annotation_records, index_of_image, label_of_category)
    if converted is None:  # something is wrong: walk the records to name the first bad one
        for n, annotation in enumerate(annotation_records):
            _check_annotation(annotation, f"{path}: annotation #{n} (id {annotation.get('id')})",
                              index_of_image, label_of_category)
        raise AssertionError("_convert_annotations refused valid annotations")
    box_images, labels, xywh, is_crowd = converted

    return _CocoSet(
        annotation_file=path,
        class_names=class_names,
        category_ids=category_ids,
        image_ids=image_ids,
        image_paths=image_paths,
        image_sizes=image_sizes,
        sources=[f"{path}: image id {image_id}" for image_id in image_ids],
        box_images=box_images,
        boxes=np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1),
        labels=labels,
        is_crowd=is_crowd,
    )


def _yolo_image_list(root: str, set_name: str) -> "tuple[str, list[str], list[str]]":
    """(the list file or labels folder, image paths, per image where it was declared).

    ``<root>/<set>.txt`` when it exists (paths relative to ``root``), else every image file in
    ``<root>/images/<set>/`` in name order.
    """
    list_path = os.path.join(root, f"{set_name}.txt")
    if os.path.isfile(list_path):
        paths, sources, missing = [], [], []
        for line, text in read_text_lines(list_path):
            name = text.strip()
            if not name:
                continue
            path = os.path.normpath(os.path.join(root, name))  # join keeps an absolute name as it is
            paths.append(path)
            sources.append(f"{list_path}:{line}")
            if not os.path.isfile(path):
                missing.append(f"{list_path}:{line}: image {name!r} not found as {path}")
        if missing:
            raise UserError(f"{missing[0]} ({len(missing)} of {len(paths)} images are missing)")
        if not paths:
            raise UserError(f"{list_path}: no images listed")
        return list_path, paths, sources
    image_dir = os.path.join(root, "images", set_name)
    if not os.path.isdir(image_dir):
        raise UserError(f"COCO images for {set_name!r} not found: neither {list_path} nor {image_dir} exists")
    paths = sorted(entry.path for entry in os.scandir(image_dir) if entry.is_file() and has_image_extension(entry.name))
    if not paths:
        raise UserError(f"{image_dir}: no images")
    return os.path.join(root, "labels", set_name), paths, [image_dir] * len(paths)


def _label_path(image_path: str) -> "str | None":
    """``.../images/<rest>.jpg`` -> ``.../labels/<rest>.txt`` (the last ``images`` folder), or None."""
    head, found, tail = image_path.rpartition(f"{os.sep}images{os.sep}")
    if not found:
        return None
    return os.path.splitext(f"{head}{os.sep}labels{os.sep}{tail}")[0] + ".txt"


def _parse_yolo_row(fields: "list[str]", where: str) -> "tuple[int, list[float]]":
    """(label, [x1, y1, x2, y2] as fractions of the image) of one label row.

    Rows of more than 5 fields are polygons ``class x1 y1 x2 y2 x3 y3 ...`` (the segment labels)
    and give their bounding box.
    """
    if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
        raise UserError(
            f"{where}: expected '{_YOLO_ROW}' (5 numbers) or a polygon 'class x1 y1 x2 y2 x3 y3 ...', "
            f"got {len(fields)} fields: {' '.join(fields)!r}"
        )
    values = []
    for text in fields:
        try:
            values.append(float(text))
        except ValueError:
            raise UserError(f"{where}: {text!r} is not a number") from None
    if not values[0].is_integer() or not 0 <= values[0] < len(COCO_CLASS_NAMES):
        raise UserError(f"{where}: class {fields[0]!r} is not a COCO class id 0..{len(COCO_CLASS_NAMES) - 1}")
    coordinates = values[1:]
    if not all(0.0 <= value <= 1.0 for value in coordinates):  # also rejects nan
        raise UserError(
            f"{where}: coordinates must be fractions of the image size in [0, 1], got {' '.join(fields[1:])!r}"
        )
    if len(fields) == 5:
        cx, cy, w, h = coordinates
        return int(values[0]), [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    xs, ys = coordinates[0::2], coordinates[1::2]
    return int(values[0]), [min(xs), min(ys), max(xs), max(ys)]


def _image_ids_from_names(paths: "list[str]") -> "list[int]":
    """COCO's ids where every file name is one (``000000000139.jpg`` -> 139), else 1..I in list order."""
    stems = [os.path.splitext(os.path.basename(path))[0] for path in paths]
    if all(stem.isascii() and stem.isdigit() for stem in stems):
        ids = [int(stem) for stem in stems]
        if len(set(ids)) == len(ids):
            return ids
    return list(range(1, len(paths) + 1))


def _yolo_boxes(rows: "list[list[str]]", where: "list[str]") -> "tuple[np.ndarray, np.ndarray]":
    """(B,) labels and (B, 4) x1y1x2y2 fractions of the label rows (fields per row, file:line per row).

    Label files hold only ``class cx cy w h`` rows almost always; those are converted at once,
    and anything else (polygons, a mistake) goes row by row, which names the first bad row.
    """
    values = None
    if all(len(fields) == 5 for fields in rows):
        try:
            values = np.array(rows, dtype=np.float64).reshape(-1, 5)
        except ValueError:
            values = None
    if values is not None:
        classes, coordinates = values[:, 0], values[:, 1:]
        valid = ((classes == np.floor(classes)) & (classes >= 0) & (classes < len(COCO_CLASS_NAMES))
                 & ((coordinates >= 0) & (coordinates <= 1)).all(axis=1))
        if valid.all():
            centres, sides = coordinates[:, :2], coordinates[:, 2:]
            return classes.astype(np.int64), np.concatenate([centres - sides / 2, centres + sides / 2], axis=1)
    parsed = [_parse_yolo_row(fields, place) for fields, place in zip(rows, where)]
    return (np.array([label for label, _ in parsed], dtype=np.int64),
            np.array([box for _, box in parsed], dtype=np.float64).reshape(-1, 4))


def _read_yolo_style(root: str, set_name: str) -> _CocoSet:
    """The YOLO-style layout; the image headers are read here, as the labels are fractions of them."""
    annotation_file, image_paths, sources = _yolo_image_list(root, set_name)
    image_sizes: "list[tuple[int, int]]" = []
    rows, row_images, row_places = [], [], []  # per label row: its fields, image index, file:line
    for index in start_up_progress(range(len(image_paths)), f"labels and image sizes ({set_name})"):
        label_path = _label_path(image_paths[index])
        if label_path is None:
            raise UserError(f"{sources[index]}: {image_paths[index]} is not in an 'images' folder, so it has "
                            "no labels/ file (labels/<set>/<name>.txt mirrors images/<set>/<name>.jpg)")
        try:
            image_sizes.append(read_image_size(image_paths[index]))
        except UserError as error:
            raise UserError(f"{sources[index]}: {error}") from None
        if not os.path.isfile(label_path):
            continue  # an image without objects: YOLO-style sets leave out empty label files
        for line, text in read_text_lines(label_path):
            fields = text.split()
            if fields:
                rows.append(fields)
                row_images.append(index)
                row_places.append((label_path, line))
    labels, fractions = _yolo_boxes(rows, [f"{path}:{line}" for path, line in row_places])
    box_images = np.array(row_images, dtype=np.int64)
    # (B, 4) width, height, width, height of each box's image
    scale = np.tile(np.array(image_sizes, dtype=np.float64).reshape(-1, 2)[:, ::-1], 2)[box_images]
    # cx +- w / 2 can pass the border by a rounding error; boxes stay inside their image.
    boxes = np.clip(fractions, 0.0, 1.0) * scale
    return _CocoSet(
        annotation_file=annotation_file,
        class_names=list(COCO_CLASS_NAMES),
        category_ids=list(COCO_CATEGORY_IDS),
        image_ids=_image_ids_from_names(image_paths),
        image_paths=image_paths,
        image_sizes=image_sizes,
        sources=sources,
        box_images=box_images,
        boxes=boxes,
        labels=labels,
        is_crowd=np.zeros(len(labels), dtype=bool),
    )


class CocoDataset(DetectionDataset):
    """A COCO set in the official or the YOLO-style layout (module docstring), found automatically.

    Args:
        root: the folder holding ``annotations/`` (official) or ``labels/`` (YOLO-style).
        set_name: e.g. ``train2017``, ``val2017``.
        transform: see ``DetectionDataset``.

    Official layout: labels are the categories in increasing id order; ``iscrowd`` boxes become
    ignore regions of their category. YOLO-style layout: the 80 COCO classes, boxes in pixels
    of the image as displayed, no crowd boxes. Attributes beside the common interface:
    ``layout`` ("official" or "yolo"), ``category_ids`` (label -> COCO category id),
    ``image_ids`` (dataset index -> COCO image id), ``annotation_file`` (the JSON, the image
    list or the labels folder), ``num_dropped_boxes`` (boxes under a pixel wide or tall).
    """

    def __init__(
        self, root: "str | os.PathLike", set_name: str = "val2017", transform: "Transform | None" = None
    ):
        root = os.fspath(root)
        path = os.path.join(root, "annotations", f"instances_{set_name}.json")
        if os.path.isfile(path):
            layout, coco_set = "official", _read_official(path, root, set_name)
        elif os.path.isdir(os.path.join(root, "labels", set_name)):
            layout, coco_set = "yolo", _read_yolo_style(root, set_name)
        else:
            raise UserError(
                f"{path}: COCO annotation file not found, nor YOLO-style labels in "
                f"{os.path.join(root, 'labels', set_name)}"
            )
        sides = coco_set.boxes[:, 2:] - coco_set.boxes[:, :2]
        keep = np.isfinite(coco_set.boxes).all(axis=1) & (sides >= MIN_COCO_BOX_SIDE).all(axis=1)
        annotations = group_by_image(
            len(coco_set.image_ids), coco_set.box_images[keep], coco_set.boxes[keep], coco_set.labels[keep],
            coco_set.is_crowd[keep],
        )
        super().__init__(
            coco_set.class_names, coco_set.image_paths, annotations, coco_set.sources, transform,
            coco_set.image_sizes,
        )
        self.layout = layout
        self.category_ids = coco_set.category_ids
        self.image_ids = coco_set.image_ids
        self.annotation_file = coco_set.annotation_file
        self.num_dropped_boxes = int((~keep).sum())
        # Boxes under a pixel, kept for the YOLO-style ground truth: (D,) image index, (D, 4), (D,) label.
        self._dropped = (coco_set.box_images[~keep], coco_set.boxes[~keep], coco_set.labels[~keep])
        self.read_image_sizes(f"image sizes ({set_name})")  # those the annotation file does not state

    def coco_ground_truth(self) -> "str | dict":
        """What COCO AP is scored against: the annotation file, or for the YOLO-style layout the
        equivalent COCO dict (every box, also those under a pixel; area = box area in pixels)."""
        if self.layout == "official":
            return self.annotation_file
        folder = os.path.commonpath([os.path.dirname(path) for path in self._image_paths])
        images = [
            {"id": image_id, "file_name": os.path.relpath(path, folder), "height": size[0], "width": size[1]}
            for image_id, path, size in zip(self.image_ids, self._image_paths, self._image_sizes)
        ]
        box_images = [np.full(len(a["labels"]), index) for index, a in enumerate(self._annotations)]
        box_images = np.concatenate([*box_images, self._dropped[0]]).astype(np.int64)
        boxes = np.concatenate([*(a["boxes"] for a in self._annotations), self._dropped[1]]).astype(np.float64)
        labels = np.concatenate([*(a["labels"] for a in self._annotations), self._dropped[2]]).astype(np.int64)
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        annotations = [
            {"id": number, "image_id": self.image_ids[image], "category_id": self.category_ids[label],
             "bbox": box, "area": box[2] * box[3], "iscrowd": 0}
            for number, (image, label, box) in enumerate(
                zip(box_images.tolist(), labels.tolist(), xywh.tolist()), start=1
            )
        ]
        categories = [{"id": category_id, "name": name}
                      for category_id, name in zip(self.category_ids, self.class_names)]
        return {"images": images, "annotations": annotations, "categories": categories}
