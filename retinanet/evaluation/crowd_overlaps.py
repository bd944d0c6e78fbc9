"""How crowded a set is: people per image, and pairs of people whose boxes overlap.

CrowdHuman's paper measures crowding by the pairs of people per image whose full-body boxes overlap
at IoU > 0.5 (2.4 in its training set); those are the people a full-body NMS at 0.5 can merge.
The same pairs by visible-body box show how many stay apart once occlusion is taken into account.

How a detector does on those people: their recall over every detection (``overlapped_recall``),
and their AP and MR^-2 as a subset of the set (``overlapped_subset``): the other people become
ignored boxes, the way the Caltech protocol (and CityPersons' occlusion subsets) scores a subset,
so that a detection on one of them is neither a hit nor a false positive. Recall over every
detection saturates when the detector keeps many low-scoring boxes; MR^-2 weighs the people found
ahead of the first false positives per image.
"""
from typing import Dict, Sequence

import numpy as np

from retinanet.evaluation.crowdhuman import (
    IGNORE_IOA_THRESHOLD,
    box_overlap_opr,
    clip_boundary,
    compare_caltech,
    evaluate_crowdhuman,
    max_ioa,
)
from retinanet.evaluation.matching import box_iou, xywh_to_xyxy

PAIR_IOU = 0.5
BOX_KEYS = {"full": "fbox", "visible": "vbox", "head": "hbox"}


def overlapping_pairs(boxes: np.ndarray, threshold: float = PAIR_IOU) -> np.ndarray:
    """boxes (N, 4) x1y1x2y2 -> (P, 2) index pairs i < j whose IoU is above ``threshold``."""
    iou = box_iou(boxes, boxes)
    first, second = np.nonzero(np.triu(iou > threshold, k=1))
    return np.stack([first, second], axis=1)


def overlapped(boxes: np.ndarray, threshold: float = PAIR_IOU) -> np.ndarray:
    """boxes (N, 4) x1y1x2y2 -> (N,) bool: the box overlaps another one at IoU above ``threshold``."""
    flags = np.zeros(len(boxes), dtype=bool)
    flags[overlapping_pairs(boxes, threshold).reshape(-1)] = True
    return flags


def person_boxes(record: dict, kind: str) -> np.ndarray:
    """(N, 4) x1y1x2y2 boxes of ``kind`` (full, visible, head) of a record's people: gtboxes tagged
    ``person`` and not ``extra.ignore``, as the official evaluation counts them."""
    boxes = [gtbox[BOX_KEYS[kind]] for gtbox in record["gtboxes"]
             if gtbox.get("tag") == "person" and not (gtbox.get("extra") or {}).get("ignore", 0)]
    return xywh_to_xyxy(boxes)


def crowd_statistics(records: Sequence[dict]) -> Dict[str, float]:
    """Means per image over odgt records ({"gtboxes": [...]}): people, and pairs of people at full-body
    and at visible-body IoU > PAIR_IOU."""
    people = full = visible = 0
    for record in records:
        people += len(person_boxes(record, "full"))
        full += len(overlapping_pairs(person_boxes(record, "full")))
        visible += len(overlapping_pairs(person_boxes(record, "visible")))
    count = max(len(records), 1)
    return {"images": len(records), "people_per_image": people / count, "full_pairs_per_image": full / count,
            "visible_pairs_per_image": visible / count}


def format_crowd_statistics(name: str, statistics: Dict[str, float]) -> str:
    """One line: images, people per image and overlapping pairs per image."""
    return (f"{name}: {statistics['images']} images, {statistics['people_per_image']:.1f} people per image; "
            f"pairs of people per image at IoU > {PAIR_IOU:g}: {statistics['full_pairs_per_image']:.2f} by full "
            f"body, {statistics['visible_pairs_per_image']:.2f} by visible body")


def _clipped(boxes: np.ndarray, size: "tuple[int, int]") -> np.ndarray:
    """(N, 4) boxes of an (H, W) image clipped the official way."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return clip_boundary(boxes, np.full(len(boxes), size[0]), np.full(len(boxes), size[1]))


def overlapped_subset(
    ground_truths: Sequence[dict], image_sizes: Sequence["tuple[int, int]"], class_index: int = 0,
    threshold: float = PAIR_IOU,
) -> "list[dict]":
    """The ground truth with only the overlapped people of class ``class_index`` left valid.

    ground_truths, image_sizes: as ``overlapped_recall``. A person whose clipped full-body box
    overlaps no other person's at IoU > ``threshold`` becomes an ignored box of its class (ignore
    label ``class_index``), so ``evaluate_crowdhuman`` drops a detection on it (IoA > 0.5) instead
    of counting a hit or a false positive. Other classes and the ignore regions stay as they are.
    """
    subset = []
    for truth, size in zip(ground_truths, image_sizes):
        boxes = np.asarray(truth["boxes"], dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(truth["labels"], dtype=np.int64).reshape(-1)
        mine = np.flatnonzero(labels == class_index)
        alone = np.zeros(len(boxes), dtype=bool)
        alone[mine] = ~overlapped(_clipped(boxes[mine], size), threshold)
        subset.append({
            "boxes": boxes[~alone], "labels": labels[~alone],
            "ignore": np.concatenate([np.asarray(truth["ignore"], dtype=np.float64).reshape(-1, 4), boxes[alone]]),
            "ignore_labels": np.concatenate([np.asarray(truth["ignore_labels"], dtype=np.int64).reshape(-1),
                                             np.full(int(alone.sum()), class_index, dtype=np.int64)]),
        })
    return subset


def overlapped_recall(
    detections: Sequence[dict], ground_truths: Sequence[dict], image_sizes: Sequence["tuple[int, int]"],
    class_index: int = 0, threshold: float = PAIR_IOU,
) -> Dict[str, float]:
    """Recall of the people whose full-body box overlaps another person's at IoU > ``threshold``.

    Detections are matched to people as the CrowdHuman protocol matches them for AP (clipped to
    the image, by descending score, official ``compare_caltech`` on IoU > 0.5 with the valid boxes,
    ignore regions absorbing the rest), over every detection given.
    detections: per image {boxes (D, 4) x1y1x2y2, scores (D,), labels (D,)}; ground_truths: per image
    {boxes (N, 4), labels (N,), ignore (M, 4), ignore_labels (M,)} with the full-body boxes of class
    ``class_index``; image_sizes: per image (H, W).
    Returns {"overlapped_recall", "num_overlapped", "recall" (of every person), "num_people",
    "overlapped_ap", "overlapped_mr": AP and MR^-2 of the overlapped people (``overlapped_subset``)}.
    """
    if not len(detections) == len(ground_truths) == len(image_sizes):
        raise ValueError(f"{len(detections)} detection records and {len(image_sizes)} image sizes for "
                         f"{len(ground_truths)} images")
    num_overlapped = hit_overlapped = num_people = hit_people = 0
    for image_dets, truth, (height, width) in zip(detections, ground_truths, image_sizes):
        size = (height, width)
        people = _clipped(np.asarray(truth["boxes"]).reshape(-1, 4)[np.asarray(truth["labels"]) == class_index], size)
        ignore_labels = np.asarray(truth["ignore_labels"])
        regions = _clipped(np.asarray(truth["ignore"]).reshape(-1, 4)[(ignore_labels == class_index)
                                                                      | (ignore_labels == -1)], size)
        mine = np.asarray(image_dets["labels"]) == class_index
        scores = np.asarray(image_dets["scores"], dtype=np.float64)[mine]
        boxes = _clipped(np.asarray(image_dets["boxes"]).reshape(-1, 4)[mine], size)[np.argsort(-scores, kind="stable")]
        matched, _ = compare_caltech(box_overlap_opr(boxes, people, if_iou=True),
                                     max_ioa(boxes, regions) > IGNORE_IOA_THRESHOLD)
        found = np.zeros(len(people), dtype=bool)
        found[matched[matched >= 0]] = True
        crowded = overlapped(people, threshold)
        num_overlapped += int(crowded.sum())
        hit_overlapped += int((found & crowded).sum())
        num_people += len(people)
        hit_people += int(found.sum())
    subset = evaluate_crowdhuman(detections, overlapped_subset(ground_truths, image_sizes, class_index, threshold),
                                 class_index, image_sizes)
    return {"overlapped_recall": hit_overlapped / num_overlapped if num_overlapped else float("nan"),
            "num_overlapped": num_overlapped,
            "recall": hit_people / num_people if num_people else float("nan"), "num_people": num_people,
            "overlapped_ap": subset["ap"], "overlapped_mr": subset["mr"]}
