"""Crowding statistics (pairs of people at IoU > 0.5) on hand-made boxes, and the dense synthetic crowds."""
import json
from pathlib import Path

import numpy as np
import pytest

from retinanet.data.crowdhuman import read_odgt
from retinanet.evaluation.crowd_overlaps import (
    crowd_statistics,
    format_crowd_statistics,
    overlapped,
    overlapped_recall,
    overlapped_subset,
    overlapping_pairs,
    person_boxes,
)
from retinanet.evaluation.crowdhuman import clip_boundary, evaluate_crowdhuman
from retinanet.evaluation.detection_files import read_detection_file
from retinanet.evaluation.matching import box_iou, xywh_to_xyxy
from retinanet.evaluation.odgt_ground_truth import read_odgt_ground_truth, resolve_image_sizes
from tools.synthetic_crowdhuman import crowd_config, generate_image

# IoU(A, B) = 80 / 120 = 0.667, IoU(B, C) = 70 / 130 = 0.538, IoU(A, C) = 50 / 150 = 0.333; D is apart.
BOXES = np.array([[0, 0, 10, 10], [2, 0, 12, 10], [5, 0, 15, 10], [40, 40, 50, 50]], dtype=np.float64)


def test_pairs_above_half_iou_by_hand():
    assert overlapping_pairs(BOXES).tolist() == [[0, 1], [1, 2]]
    assert overlapping_pairs(BOXES, threshold=0.6).tolist() == [[0, 1]]
    assert overlapped(BOXES).tolist() == [True, True, True, False]
    assert overlapping_pairs(np.zeros((0, 4))).shape == (0, 2)


def person(fbox, vbox, ignore=0):
    return {"tag": "person", "fbox": fbox, "vbox": vbox, "hbox": [0, 0, 1, 1], "extra": {"ignore": ignore}}


def test_statistics_count_people_as_the_official_evaluation_does():
    records = [
        # Two people standing one behind the other: full bodies at IoU 0.667, visible bodies apart.
        {"gtboxes": [person([0, 0, 10, 10], [0, 0, 4, 10]), person([2, 0, 10, 10], [8, 0, 4, 10]),
                     person([2, 0, 10, 10], [2, 0, 10, 10], ignore=1),  # an ignored person is not counted
                     {"tag": "mask", "fbox": [0, 0, 10, 10], "vbox": [0, 0, 10, 10], "hbox": [0, 0, 10, 10]}]},
        {"gtboxes": [person([40, 40, 10, 10], [40, 40, 10, 10])]},
    ]
    assert person_boxes(records[0], "full").tolist() == [[0, 0, 10, 10], [2, 0, 12, 10]]
    stats = crowd_statistics(records)
    assert stats == {"images": 2, "people_per_image": 1.5, "full_pairs_per_image": 0.5,
                     "visible_pairs_per_image": 0.0}
    assert format_crowd_statistics("val", stats) == (
        "val: 2 images, 1.5 people per image; pairs of people per image at IoU > 0.5: 0.50 by full body, "
        "0.00 by visible body")


@pytest.mark.parametrize("crowd,people,pairs", [("dense", (15, 30), (2.0, 5.0)), ("sparse", (3, 8), (0.0, 1.0))])
def test_dense_crowds_have_crowdhumans_overlaps(crowd, people, pairs):
    config = crowd_config(crowd)
    records = [{"gtboxes": generate_image(np.random.default_rng([11, index]), config)[1]} for index in range(16)]
    stats = crowd_statistics(records)
    assert people[0] <= stats["people_per_image"] <= people[1]
    assert pairs[0] <= stats["full_pairs_per_image"] <= pairs[1]
    # Visible bodies overlap less than full bodies: the people behind show another part of themselves.
    assert stats["visible_pairs_per_image"] < stats["full_pairs_per_image"] or stats["full_pairs_per_image"] == 0


def test_crowd_presets_take_overrides():
    assert crowd_config("dense", max_people=25, width=None).max_people == 25
    assert crowd_config("dense").width == 640 and crowd_config("sparse").behind_fraction == 0.0


def test_overlapped_subset_is_the_official_ignore_rule(tmp_path):
    """Scoring the subset is scoring an odgt whose people standing alone carry ``extra.ignore``: the
    official evaluation's own ignore rule (its golden numbers: tests/test_eval_crowdhuman.py)."""
    official = Path(__file__).parent / "fixtures" / "crowdhuman_official"
    gt_path = official / "random_gt.odgt"
    truth = read_odgt_ground_truth(str(gt_path), ["person"], "full")
    names = [f"{image_id}.jpg" for image_id in truth.image_ids]
    found = read_detection_file(official / "random_dt_full.odgt", names, ["person"], "person")
    sizes = resolve_image_sizes(truth, found.image_sizes)
    marked, num_alone, num_overlapped = [], 0, 0
    for (_, record), (height, width) in zip(read_odgt(str(gt_path)), sizes):
        people = [g for g in record["gtboxes"] if g["tag"] == "person" and not g.get("extra", {}).get("ignore")]
        boxes = clip_boundary(xywh_to_xyxy([g["fbox"] for g in people]), np.full(len(people), height),
                              np.full(len(people), width))
        iou = box_iou(boxes, boxes) - 2 * np.eye(len(people))  # nobody overlaps themselves
        for gtbox, crowded in zip(people, (iou > 0.5).any(axis=1)):
            gtbox.setdefault("extra", {})["ignore"] = int(not crowded)
            num_alone, num_overlapped = num_alone + (not crowded), num_overlapped + crowded
        marked.append(json.dumps(record))
    assert num_alone > 0 and num_overlapped > 0
    (tmp_path / "marked.odgt").write_text("\n".join(marked) + "\n")
    reference = evaluate_crowdhuman(found.detections, read_odgt_ground_truth(
        str(tmp_path / "marked.odgt"), ["person"], "full").annotations, 0, sizes)
    subset = evaluate_crowdhuman(found.detections, overlapped_subset(truth.annotations, sizes), 0, sizes)
    assert subset["num_annotations"] == reference["num_annotations"] == num_overlapped
    assert (subset["ap"], subset["mr"]) == (reference["ap"], reference["mr"])
    result = overlapped_recall(found.detections, truth.annotations, sizes)
    assert (result["overlapped_ap"], result["overlapped_mr"]) == (reference["ap"], reference["mr"])
