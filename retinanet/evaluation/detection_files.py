"""Saved detections: our JSON-lines file, and CrowdHuman's official result format.

Our format, one JSON object per image::

    {"image": "<name>", "boxes": [[x1, y1, x2, y2], ...], "scores": [...], "labels": ["<class>", ...]}

A person-triplet model's record has its three boxes per person in place of ``boxes``::

    {"image": "<name>", "full": [[x1, y1, x2, y2], ...], "visible": [...], "head": [...],
     "scores": [...], "labels": ["person", ...]}

(a detection of the model's head class, label ``head``, has its one box in all three lists).

Boxes and scores are written as the shortest decimals that read back to the same
float32 values, and ``read_detections`` returns them as float32, so detections from
the model (float32) survive a round trip bit for bit and re-evaluation gives the same
numbers.

CrowdHuman's official format (CrowdDet, mmdet), one JSON object per image::

    {"ID": "<image id>", "height": H, "width": W,
     "dtboxes": [{"box": [x, y, w, h], "score": s, "tag": t}, ...]}

``ID`` is the image file name without directory and extension; ``height`` and ``width``
are optional (CrowdDet writes them, and the official evaluation clips with them). ``tag``
is a class name; CrowdDet and mmdet write the number 1 instead, meaning the class being
evaluated, so detections whose tag is not a string go to ``untagged_class`` when one is
given. Those boxes are returned as float64, x2 = x + w computed as the official code does.

Our records name an image as the caller's ``image_names`` do, or as its ``other_names``
(e.g. the path exactly as the annotation file writes it); both are compared after
``os.path.normpath``, so ``./a.jpg`` is ``a.jpg``.
"""

import json
import os
from pathlib import Path
from typing import NamedTuple, Optional, Sequence, Union

import numpy as np

from retinanet.errors import UserError
from retinanet.evaluation.crowdhuman import record_image_size
from retinanet.io_utils import atomic_open

PathLike = Union[str, os.PathLike]
# A person-triplet record's JSON fields and the detection keys they hold (evaluation.person_triplets).
TRIPLET_FIELDS = ("full", "visible", "head")
TRIPLET_RECORD_KEYS = ("boxes", "visible_boxes", "head_boxes")


def _number_text(values: np.ndarray) -> "list[str]":
    """values (...,) -> shortest decimals that read back to the same float32 values, as nested lists."""
    return values.astype(np.float32).astype(str).tolist()


def write_detections_jsonl(
    path: PathLike, detections: Sequence[dict], image_names: Sequence[str], class_names: Sequence[str]
) -> None:
    """Write one JSON line per image, atomically.

    detections: per image {boxes (D, 4) x1y1x2y2, scores (D,), labels (D,) class index};
    image_names: (I,) names as in the annotation file; class_names: index -> name.
    Boxes and scores are stored as float32.
    """
    if len(detections) != len(image_names):
        raise ValueError(f"{len(detections)} detection records for {len(image_names)} image names")
    names = np.asarray(list(class_names), dtype=object)
    with atomic_open(path, "w", encoding="utf-8") as handle:
        for image_name, record in zip(image_names, detections):
            boxes = np.asarray(record["boxes"])
            scores = np.asarray(record["scores"]).reshape(-1)
            labels = np.asarray(record["labels"], dtype=np.int64).reshape(-1)
            boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes
            if boxes.ndim != 2 or boxes.shape[1] != 4 or not len(boxes) == len(scores) == len(labels):
                raise ValueError(
                    f"detections of {image_name!r}: boxes {boxes.shape}, scores {scores.shape} and labels "
                    f"{labels.shape} do not describe the same (D, 4) boxes"
                )
            if not np.isfinite(boxes).all() or not np.isfinite(scores).all():
                raise ValueError(f"detections of {image_name!r} hold a non-finite box or score")
            if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
                raise ValueError(f"detections of {image_name!r} have labels outside [0, {len(names)})")
            boxes_json = f'"boxes":{_boxes_json(boxes)}'
            if "head_boxes" in record:
                triplet = [np.asarray(record[key], dtype=np.float32).reshape(-1, 4) for key in TRIPLET_RECORD_KEYS]
                if not all(len(kind) == len(boxes) and np.isfinite(kind).all() for kind in triplet[1:]):
                    raise ValueError(f"detections of {image_name!r}: visible and head boxes must be (D, 4) finite "
                                     "like the full boxes")
                boxes_json = ",".join(f'"{field}":{_boxes_json(kind)}' for field, kind in zip(TRIPLET_FIELDS, triplet))
            scores_json = "[" + ",".join(_number_text(scores)) + "]"
            labels_json = json.dumps(names[labels].tolist())
            handle.write(
                f'{{"image":{json.dumps(image_name)},{boxes_json},"scores":{scores_json},'
                f'"labels":{labels_json}}}\n'
            )


def _boxes_json(boxes: np.ndarray) -> str:
    return "[" + ",".join("[" + ",".join(row) + "]" for row in _number_text(boxes)) + "]"


def _empty(dtype) -> dict:
    return {
        "boxes": np.zeros((0, 4), dtype=dtype),
        "scores": np.zeros((0,), dtype=dtype),
        "labels": np.zeros((0,), dtype=np.int64),
    }


def _numeric(values: list, what: str, dtype) -> np.ndarray:
    """JSON list -> finite array of dtype; a ValueError says what is wrong (the caller adds file:line)."""
    try:
        array = np.asarray(values)
    except ValueError:
        raise ValueError(f"{what} must be lists of numbers of equal length") from None
    # Strings, booleans and nulls would convert silently: only JSON numbers are accepted.
    if array.size and array.dtype.kind not in "iuf":
        raise ValueError(f"{what} must hold numbers only")
    array = array.astype(dtype)
    if not np.isfinite(array).all():
        raise ValueError(f"{what} holds a non-finite number")
    return array


def _parse_ours(record: dict, class_index: dict) -> "tuple[str, dict]":
    image = record.get("image")
    if not isinstance(image, str):
        raise ValueError('"image" must be a string')
    box_fields = TRIPLET_FIELDS if "full" in record else ("boxes",)
    for key in (*box_fields, "scores", "labels"):
        if not isinstance(record.get(key), list):
            raise ValueError(f'"{key}" must be a list')
    kinds = [_box_list(record[field], field) for field in box_fields]
    boxes = kinds[0]
    if any(len(kind) != len(boxes) for kind in kinds):
        raise ValueError(f'{", ".join(str(len(kind)) for kind in kinds)} {"/".join(box_fields)} boxes: one of each '
                         "per person")
    scores = _numeric(record["scores"], '"scores"', np.float32)
    if scores.ndim != 1 or len(scores) != len(boxes) or len(record["labels"]) != len(boxes):
        raise ValueError(
            f"{len(boxes)} boxes, {len(record['scores'])} scores and {len(record['labels'])} labels: "
            "the counts must be equal"
        )
    labels = _class_indices(record["labels"], class_index)
    for field, kind in zip(box_fields, kinds):
        _check_boxes(kind, "box" if field == "boxes" else f"{field} box")
    parsed = dict(zip(TRIPLET_RECORD_KEYS, kinds))
    parsed.update(scores=scores, labels=labels)
    return image, parsed


def _box_list(values: list, field: str) -> np.ndarray:
    boxes = _numeric(values, f'"{field}"', np.float32)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f'"{field}" must be a list of [x1, y1, x2, y2]')
    return boxes


def _class_indices(names: list, class_index: dict) -> np.ndarray:
    try:
        return np.array([class_index[name] for name in names], dtype=np.int64)
    except (KeyError, TypeError):
        unknown = next(name for name in names if not isinstance(name, str) or name not in class_index)
        raise ValueError(f"unknown class {unknown!r} (classes: {', '.join(class_index)})") from None


def _check_boxes(boxes: np.ndarray, what: str) -> None:
    """boxes (n, 4) x1y1x2y2: x2 >= x1 and y2 >= y1, else a ValueError naming the first bad one."""
    bad = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
    if len(bad):
        raise ValueError(f"{what} {bad[0]} {boxes[bad[0]].tolist()} has a negative width or height")


def _parse_official(record: dict, class_index: dict, untagged_class: Optional[str]) -> "tuple[str, dict]":
    image = record.get("ID")
    if not isinstance(image, str):
        raise ValueError('"ID" must be a string')
    dtboxes = record.get("dtboxes")
    if not isinstance(dtboxes, list):
        raise ValueError('"dtboxes" must be a list')
    if not dtboxes:
        return image, _empty(np.float64)
    try:
        xywh = [entry["box"] for entry in dtboxes]
        scores = [entry["score"] for entry in dtboxes]
        tags = [entry.get("tag") for entry in dtboxes]
    except (KeyError, TypeError, AttributeError):
        raise ValueError('each of "dtboxes" must be an object with "box" and "score"') from None
    boxes = _numeric(xywh, '"box"', np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError('each "box" must be [x, y, w, h]')
    boxes[:, 2:] += boxes[:, :2]
    _check_boxes(boxes, "detection")
    scores = _numeric(scores, '"score"', np.float64)
    if scores.ndim != 1:
        raise ValueError('each "score" must be a number')
    untagged = [i for i, tag in enumerate(tags) if not isinstance(tag, str)]
    if untagged:
        if untagged_class is None:
            raise ValueError(
                f"detection {untagged[0]} has tag {tags[untagged[0]]!r}, not a class name, and no class "
                "was given for untagged detections (pass --untagged_class, e.g. --untagged_class person)"
            )
        for i in untagged:
            tags[i] = untagged_class
    return image, {"boxes": boxes, "scores": scores, "labels": _class_indices(tags, class_index)}


class DetectionFile(NamedTuple):
    """What ``read_detection_file`` returns, per entry of its ``image_names``.

    detections (I,): {boxes (D, 4) x1y1x2y2, scores (D,), labels (D,) int64};
    image_sizes (I,): (H, W) from an official record's ``height`` and ``width``, else None.
    """

    detections: "list[dict]"
    image_sizes: "list[Optional[tuple[int, int]]]"


def _name_index(image_names: Sequence[str], other_names: Optional[Sequence[str]]) -> "dict[str, list[int]]":
    """Normalised spelling -> the images it names (more than one: ambiguous)."""
    index: "dict[str, list[int]]" = {}
    for spellings in (image_names, other_names or ()):
        for image, name in enumerate(spellings):
            images = index.setdefault(os.path.normpath(name), [])
            if image not in images:
                images.append(image)
    return index


def read_detection_file(
    path: PathLike,
    image_names: Sequence[str],
    class_names: Sequence[str],
    untagged_class: Optional[str] = None,
    other_names: Optional[Sequence[str]] = None,
) -> DetectionFile:
    """Read saved detections (our JSON lines or CrowdHuman's official format, line by line).

    image_names (I,): the images, in the order of the result; other_names (I,): a further
    spelling our records may use for each (module docstring). An image without a record has
    no detections. Official records are matched by "ID" == the name's file name without
    extension. Any problem is a UserError "path:line: what is wrong": bad JSON or fields, an
    unknown class, a second record for one image, a name that fits two images, and records of
    images that are not in image_names (the first one named, with their count).
    """
    class_index = {name: index for index, name in enumerate(class_names)}
    if untagged_class is not None and untagged_class not in class_index:
        raise UserError(
            f"class {untagged_class!r} for untagged detections is not one of: {', '.join(class_names)}"
        )
    by_name = _name_index(image_names, other_names)
    by_id: "dict[str, list[int]]" = {}
    for index, name in enumerate(image_names):
        by_id.setdefault(Path(name).stem, []).append(index)
    detections: "list[Optional[dict]]" = [None] * len(image_names)
    sizes: "list[Optional[tuple[int, int]]]" = [None] * len(image_names)
    first_line = [0] * len(image_names)
    unknown = []  # (line, image) of records for images outside image_names
    try:
        # Bytes, so that a line that is not UTF-8 is reported with its number like any other bad line.
        handle = open(path, "rb")
    except OSError as error:
        raise UserError(f"{path}: cannot read detections ({error.strerror or error})") from None
    with handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(
                    f"{path}:{line_number}: not valid JSON ({error.msg}, column {error.colno})"
                ) from None
            except UnicodeDecodeError:
                raise UserError(f"{path}:{line_number}: not UTF-8 text") from None
            except RecursionError:
                raise UserError(f"{path}:{line_number}: JSON nested too deeply") from None
            size = None
            try:
                if not isinstance(record, dict):
                    raise ValueError("expected a JSON object")
                if "dtboxes" in record:
                    image, parsed = _parse_official(record, class_index, untagged_class)
                    size = record_image_size(record)
                    candidates = by_id.get(image, [])
                    what = "ID"
                elif "image" in record:
                    image, parsed = _parse_ours(record, class_index)
                    candidates = by_name.get(os.path.normpath(image), [])
                    what = "image"
                else:
                    raise ValueError('a record needs "image" (our format) or "ID" and "dtboxes" (CrowdHuman)')
                if len(candidates) > 1:
                    raise ValueError(
                        f"{what} {image!r} fits images {image_names[candidates[0]]!r} and "
                        f"{image_names[candidates[1]]!r}"
                    )
            except ValueError as error:
                raise UserError(f"{path}:{line_number}: {error}") from None
            if not candidates:
                unknown.append((line_number, image))
                continue
            index = candidates[0]
            if detections[index] is not None:
                raise UserError(
                    f"{path}:{line_number}: a second record for image {image!r} (the first is on line "
                    f"{first_line[index]})"
                )
            detections[index], sizes[index], first_line[index] = parsed, size, line_number
    if unknown:
        line_number, image = unknown[0]
        raise UserError(
            f"{path}:{line_number}: detections for image {image!r}, which is not in the ground truth "
            f"({len(unknown)} such record{'s' if len(unknown) > 1 else ''})"
        )
    empty = _empty(np.float32)
    if any(record is not None and "head_boxes" in record for record in detections):
        empty.update({key: np.zeros((0, 4), np.float32) for key in TRIPLET_RECORD_KEYS})
        plain = next((i for i, record in enumerate(detections) if record is not None and "head_boxes" not in record),
                     None)
        if plain is not None:
            raise UserError(f"{path}:{first_line[plain]}: a record with \"boxes\" among person-triplet records "
                            "(\"full\", \"visible\", \"head\"): one file holds one kind")
    return DetectionFile([record if record is not None else dict(empty) for record in detections], sizes)


def read_detections(
    path: PathLike,
    image_names: Sequence[str],
    class_names: Sequence[str],
    untagged_class: Optional[str] = None,
    other_names: Optional[Sequence[str]] = None,
) -> "list[dict]":
    """The detections of ``read_detection_file``, without the image sizes."""
    return read_detection_file(path, image_names, class_names, untagged_class, other_names).detections
