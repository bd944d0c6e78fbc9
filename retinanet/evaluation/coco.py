"""COCO box AP/AR (the twelve standard numbers) through faster-coco-eval or pycocotools.

Both backends implement the same COCOeval: AP averaged over IoU 0.50:0.05:0.95 and 101
recall points, AR over at most 1/10/100 detections per image, areas small < 32^2 <=
medium < 96^2 <= large; ``iscrowd`` ground truth may be matched by many detections
and is never missed. A number that is undefined (no ground truth of that area) is -1,
as both libraries report it. faster-coco-eval gives the same numbers as pycocotools
(tests compare them) about 15 times faster, so it is the default.
"""

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from retinanet.errors import UserError
from retinanet.evaluation.matching import flatten_detections, flatten_ground_truths
from retinanet.evaluation.voc import ignore_regions_per_class
from retinanet.io_utils import atomic_open

COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
BACKENDS = ("faster", "pycocotools")


def load_coco_json(path: Union[str, os.PathLike], what: str) -> object:
    """Parse a JSON file; a missing or malformed file is a UserError naming it and ``what`` it is."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path}:{error.lineno}: {what} is not valid JSON ({error.msg})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read {what} ({error})") from None


def _checked_ground_truth(gt: dict, source: str) -> dict:
    """A copy of the annotation dict the evaluators may annotate in place; missing fields are UserErrors."""
    if not isinstance(gt, dict):
        raise UserError(f"{source}: a COCO annotation file holds a JSON object, not {type(gt).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise UserError(f"{source}: no {key!r} list")
    for key in ("images", "categories"):
        for index, entry in enumerate(gt[key]):
            if not isinstance(entry, dict) or "id" not in entry:
                raise UserError(f"{source}: {key} entry {index} is not an object with an 'id'")
    for index, annotation in enumerate(gt["annotations"]):
        if not isinstance(annotation, dict):
            raise UserError(f"{source}: annotation {index} is not a JSON object")
        for key in ("id", "image_id", "category_id", "bbox", "area"):
            if key not in annotation:
                raise UserError(f"{source}: annotation {index} has no {key!r}")
    # COCOeval writes "ignore" into every ground-truth annotation: copy so the caller's dict stays as it was.
    return {**gt, "annotations": [dict(annotation) for annotation in gt["annotations"]]}


def _first_bad_result(results: list, gt: dict, source: str) -> UserError:
    """The error for the first result that is not a valid COCO box result (the slow path)."""
    image_ids = {image["id"] for image in gt["images"]}
    category_ids = {category["id"] for category in gt["categories"]}
    for index, result in enumerate(results):
        if not isinstance(result, dict) or not {"image_id", "category_id", "bbox", "score"} <= result.keys():
            return UserError(
                f"{source}: result {index} is not an object with image_id, category_id, bbox and score"
            )
        if not _member(result["image_id"], image_ids):
            return UserError(
                f"{source}: result {index} has image_id {result['image_id']!r}, not in the ground truth"
            )
        if not _member(result["category_id"], category_ids):
            return UserError(
                f"{source}: result {index} has category_id {result['category_id']!r}, not in the ground truth"
            )
        bbox, score = result["bbox"], result["score"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            return UserError(f"{source}: result {index} has bbox {bbox!r}, expected [x, y, width, height]")
        if not _is_number(score):
            return UserError(f"{source}: result {index} has score {score!r}, expected a number")
    raise AssertionError("no bad result found")


def _member(value, allowed: set) -> bool:
    try:
        return value in allowed
    except TypeError:  # unhashable, e.g. a list where an id belongs
        return False


def _is_number(value) -> bool:
    return _is_number_type(type(value))


def _is_number_type(kind: type) -> bool:
    return issubclass(kind, (int, float)) and not issubclass(kind, bool)


def _checked_results(results: list, gt: dict, source: str) -> list:
    """Shallow copies of the result dicts (loadRes adds keys to them), checked against the ground truth."""
    if not isinstance(results, list):
        raise UserError(f"{source}: COCO results are a JSON list, not {type(results).__name__}")
    # Whole-list checks on the sets of ids and of value types; only a failure walks the
    # list again to name the first bad result.
    try:
        copies = [dict(result) for result in results]
        image_ids = {result["image_id"] for result in copies}
        category_ids = {result["category_id"] for result in copies}
        bboxes = [result["bbox"] for result in copies]
        score_types = {type(result["score"]) for result in copies}
        bbox_types = {type(bbox) for bbox in bboxes}
        bbox_lengths = {len(bbox) for bbox in bboxes}
        value_types = {type(value) for bbox in bboxes for value in bbox}
    except (KeyError, TypeError, ValueError):
        raise _first_bad_result(results, gt, source) from None
    valid = (
        image_ids <= {image["id"] for image in gt["images"]}
        and category_ids <= {category["id"] for category in gt["categories"]}
        and all(issubclass(kind, list) for kind in bbox_types)
        and bbox_lengths <= {4}
        and all(_is_number_type(kind) for kind in score_types | value_types)
    )
    if not valid:
        raise _first_bad_result(results, gt, source)
    return copies


def _coco_api(backend: str):
    """(COCO class, COCOeval class, context that silences the backend) for a backend name."""
    if backend == "faster":
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster, contextlib.nullcontext
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        # pycocotools prints its progress and the summary table on stdout.
        return COCO, COCOeval, lambda: contextlib.redirect_stdout(io.StringIO())
    raise ValueError(f"unknown COCO backend {backend!r}; expected one of {BACKENDS}")


def evaluate_coco(
    gt: Union[str, os.PathLike, dict],
    results: Union[str, os.PathLike, list],
    backend: str = "faster",
) -> "dict[str, float]":
    """The twelve COCO box metrics of ``results`` against ``gt``.

    gt: a COCO annotation file or its dict; results: a COCO results file or list of
    {"image_id", "category_id", "bbox": [x, y, w, h], "score"}. An empty list gives AP 0.
    Returns {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs",
    "ARm", "ARl"} as floats (-1 where undefined). Neither argument is modified.
    """
    coco_class, eval_class, quiet = _coco_api(backend)
    gt_source = str(gt) if isinstance(gt, (str, os.PathLike)) else "ground truth"
    results_source = str(results) if isinstance(results, (str, os.PathLike)) else "results"
    if isinstance(gt, (str, os.PathLike)):
        gt = load_coco_json(gt, "COCO annotation file")
    if isinstance(results, (str, os.PathLike)):
        results = load_coco_json(results, "COCO results file")
    gt = _checked_ground_truth(gt, gt_source)
    results = _checked_results(results, gt, results_source)

    with quiet():
        coco_gt = coco_class()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:
            # pycocotools' loadRes cannot take an empty list; an empty result set is still evaluable.
            coco_dt = coco_class()
            coco_dt.dataset = {
                "images": list(gt["images"]),
                "categories": list(gt["categories"]),
                "annotations": [],
            }
            coco_dt.createIndex()
        evaluator = eval_class(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(COCO_METRIC_NAMES, evaluator.stats[:12])}


def detections_to_coco_results(
    detections: Sequence[dict], image_ids: Sequence[int], category_ids: Sequence[int]
) -> "list[dict]":
    """Our per-image detections -> COCO results.

    detections: per image {boxes (D, 4) x1y1x2y2, scores (D,), labels (D,) class index};
    image_ids: the COCO id of each image; category_ids: the COCO category id of each class
    index. Returns [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}].
    """
    if len(detections) != len(image_ids):
        raise ValueError(f"{len(detections)} detection records for {len(image_ids)} image ids")
    flat = flatten_detections(detections)
    category_ids = np.asarray(category_ids)
    if len(flat.labels) and (flat.labels.min() < 0 or flat.labels.max() >= len(category_ids)):
        raise ValueError(f"detection labels must be in [0, {len(category_ids)})")
    xywh = flat.boxes.copy()
    xywh[:, 2:] -= xywh[:, :2]
    return [
        {"image_id": image_id, "category_id": category_id, "bbox": box, "score": score}
        for image_id, category_id, box, score in zip(
            np.asarray(image_ids)[flat.images].tolist(),
            category_ids[flat.labels].tolist(),
            xywh.tolist(),
            flat.scores.tolist(),
        )
    ]


def write_detections_as_coco_results(
    path: Union[str, os.PathLike], detections: Sequence[dict], image_ids: Sequence[int], category_ids: Sequence[int]
) -> Path:
    """``write_coco_results(path, detections_to_coco_results(...))``, the same bytes, written an image at a
    time: the Python dicts of one image's results exist at once, not those of the whole dataset
    (about 0.7 KB per detection: 350 MiB for 500k). Returns the path."""
    if len(detections) != len(image_ids):
        raise ValueError(f"{len(detections)} detection records for {len(image_ids)} image ids")
    with atomic_open(path, "w", encoding="utf-8") as handle:
        separator = "["
        for record, image_id in zip(detections, image_ids):
            results = detections_to_coco_results([record], [image_id], category_ids)
            if results:
                handle.write(separator + json.dumps(results, separators=(",", ":"))[1:-1])
                separator = ","
        handle.write("[]" if separator == "[" else "]")
    return Path(path)


def write_coco_results(path: Union[str, os.PathLike], results: "list[dict]") -> Path:
    """Write COCO results atomically as one compact JSON list; returns the path."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        # json.dumps runs the C encoder; json.dump to a file never does (2x slower on 1M results).
        handle.write(json.dumps(results, separators=(",", ":")))
    return Path(path)


def coco_ground_truth(
    ground_truths: Sequence[dict], class_names: Sequence[str], names: Sequence[str]
) -> dict:
    """Per-image ground truth -> a COCO annotation dict for ``evaluate_coco``.

    ground_truths: per image {boxes (N, 4) x1y1x2y2, labels (N,), ignore (M, 4), ignore_labels (M,)};
    names: (I,) file names. Ids follow build_annotations_file.py: image id = index + 1, category
    id = label + 1. Ignore regions become ``iscrowd`` boxes of their class, one per class for a
    region that ignores every class.
    """
    num_classes = len(class_names)
    gt = flatten_ground_truths(ground_truths)
    regions, region_labels, region_images = ignore_regions_per_class(gt, num_classes)
    boxes = np.concatenate([gt.boxes, regions]).astype(np.float64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    is_crowd = np.r_[np.zeros(len(gt.boxes), np.int64), np.ones(len(regions), np.int64)]
    annotations = [
        {"id": n + 1, "image_id": image + 1, "category_id": label + 1, "bbox": box, "area": box[2] * box[3],
         "iscrowd": crowd}
        for n, (image, label, box, crowd) in enumerate(zip(
            np.r_[gt.images, region_images].tolist(),
            np.r_[gt.labels, region_labels].tolist(),
            xywh.tolist(),
            is_crowd.tolist(),
        ))
    ]
    return {
        "images": [{"id": index + 1, "file_name": name} for index, name in enumerate(names)],
        "annotations": annotations,
        "categories": [{"id": label + 1, "name": name} for label, name in enumerate(class_names)],
    }
