"""How crowded a set is: people per image, and pairs of people whose boxes overlap.

CrowdHuman's paper measures crowding by the pairs of people per image whose full-body boxes overlap
at IoU > 0.5 (2.4 in its training set); those are the people a full-body NMS at 0.5 can merge.
The same pairs by visible-body box show how many stay apart once occlusion is taken into account.
"""
from typing import Dict, Sequence

import numpy as np

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
