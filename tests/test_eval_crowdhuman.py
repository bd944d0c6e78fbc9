"""CrowdHuman protocol (retinanet.evaluation.crowdhuman): the official code's numbers, and hand-computed cases.

The golden numbers in tests/fixtures/crowdhuman_official/expected.json are what CrowdDet's
``lib/evaluate`` gives for those files (its README says how each mode was run).
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from retinanet.data.crowdhuman import CROWDHUMAN_CLASSES
from retinanet.errors import UserError
from retinanet.evaluation.crowdhuman import evaluate_crowdhuman
from retinanet.evaluation.detection_files import read_detection_file
from retinanet.evaluation.odgt_ground_truth import (
    EVALUATED_CLASS,
    read_odgt_ground_truth,
    resolve_image_sizes,
)
from retinanet.validation_scripts import odgt_dataset

OFFICIAL = Path(__file__).parent / "fixtures" / "crowdhuman_official"
EXPECTED = json.loads((OFFICIAL / "expected.json").read_text())
EPS = 1e-6  # the official JI denominators carry it
SIZE = (1000, 1000)  # (H, W) large enough that nothing below is clipped unless a test says so


def official_case(case: str) -> dict:
    """evaluate_crowdhuman on one case of expected.json, its files read as csv_validation reads them."""
    expected = EXPECTED[case]
    class_names = list(CROWDHUMAN_CLASSES)
    truth = read_odgt_ground_truth(str(OFFICIAL / expected["ground_truth"]), class_names, expected["box"])
    names = [f"{image_id}.jpg" for image_id in truth.image_ids]
    evaluated = EVALUATED_CLASS[expected["box"]]
    found = read_detection_file(OFFICIAL / expected["detections"], names, class_names, evaluated)
    sizes = resolve_image_sizes(truth, found.image_sizes)
    dataset = odgt_dataset(truth, sizes, names)
    ground_truths = [dataset.annotations(index) for index in range(len(dataset))]
    return evaluate_crowdhuman(found.detections, ground_truths, class_names.index(evaluated), sizes)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_the_official_numbers(case):
    result = official_case(case)
    for key in ("ap", "mr", "ji"):
        assert abs(result[key] - EXPECTED[case][key]) <= 1e-6, (key, result[key], EXPECTED[case][key])


# ---- hand-computed cases ------------------------------------------------------------------------


def gt_record(boxes=(), labels=None, ignore=(), ignore_labels=None):
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    ignore = np.array(ignore, dtype=np.float64).reshape(-1, 4)
    return {
        "boxes": boxes,
        "labels": np.zeros(len(boxes), dtype=np.int64) if labels is None else np.array(labels, dtype=np.int64),
        "ignore": ignore,
        "ignore_labels": (
            np.full(len(ignore), -1, dtype=np.int64) if ignore_labels is None else np.array(ignore_labels)
        ),
    }


def det_record(boxes=(), scores=(), labels=None):
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.zeros(len(boxes), dtype=np.int64) if labels is None else np.array(labels, dtype=np.int64)
    return {"boxes": boxes, "scores": np.array(scores, dtype=np.float64), "labels": labels}


def box(i):
    """A distinct 10x10 box per integer, far from the others."""
    return [20 * i, 0, 20 * i + 10, 10]


def evaluate(dets, gts, class_index=0, **kwargs):
    return evaluate_crowdhuman(dets, gts, class_index, [SIZE] * len(gts), **kwargs)


def iou(a, b):
    """The official IoU of two boxes, eps included."""
    inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter + EPS)


def test_perfect_detections():
    gts = [gt_record([box(0), box(1), box(2)]), gt_record([box(3)])]
    dets = [det_record([box(0), box(1), box(2)], [0.9, 0.8, 0.7]), det_record([box(3)], [0.6])]
    result = evaluate(dets, gts)
    # The official trapezoids start at the first detection (recall 1/4), not at recall 0:
    # a perfect detector on N boxes scores (N - 1) / N, which tends to 1 on real data.
    assert result["ap"] == pytest.approx(3 / 4, abs=1e-12)
    assert result["mr"] == 0.0
    # k = m = n per image, and the denominator's eps: 3 / (3 + eps) and 1 / (1 + eps).
    assert result["ji"] == pytest.approx((3 / (3 + EPS) + 1 / (1 + EPS)) / 2, abs=1e-15)
    assert result["num_annotations"] == 4 and result["num_detections"] == 4


def test_false_positive_first_at_fppi_one_tenth():
    # 10 images, one box each; the best-scored detection is an FP, then 4 TPs.
    gts = [gt_record([box(i)]) for i in range(10)]
    dets = [det_record([box(0), box(20)], [0.90, 0.95])] + [
        det_record([box(i)], [0.9 - i / 100]) for i in range(1, 5)
    ]
    dets += [det_record() for _ in range(5)]
    result = evaluate(dets, gts)
    # Points (recall, precision): (0, 0), (.1, 1/2), (.2, 2/3), (.3, 3/4), (.4, 4/5), (.5, 5/6).
    recall = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    precision = [0.0, 1 / 2, 2 / 3, 3 / 4, 4 / 5, 5 / 6]
    expected_ap = sum((recall[i] - recall[i - 1]) * (precision[i] + precision[i - 1]) / 2 for i in range(1, 6))
    assert result["ap"] == pytest.approx(expected_ap, abs=1e-12)
    np.testing.assert_allclose(result["fppi_curve"], [0.1] * 6)
    # FPPI is 0.1 from the first detection: references 0.01 .. 0.1 (five) take miss rate 1,
    # the four above 0.1 are never reached and take the last miss rate, 0.5.
    assert result["mr"] == pytest.approx(0.5 ** (4 / 9), abs=1e-12)


def test_miss_rate_at_the_first_point_reaching_each_reference():
    # 100 images with one box; 50 TPs, then one FP (FPPI becomes exactly 0.01), then 25 TPs.
    gts = [gt_record([box(0)]) for _ in range(100)]
    dets = [det_record([box(0)], [0.9]) for _ in range(50)]
    dets += [det_record([box(5)], [0.5])]
    dets += [det_record([box(0)], [0.4]) for _ in range(25)]
    dets += [det_record() for _ in range(24)]
    result = evaluate(dets, gts)
    # 0.01 is reached at the FP (miss rate 0.5); 0.0178 .. 1 never are (last miss rate 0.25).
    assert result["mr"] == pytest.approx(math.exp((math.log(0.5) + 8 * math.log(0.25)) / 9), abs=1e-12)


def test_ignore_covered_detection_is_dropped():
    region = [100, 100, 200, 200]
    gts = [gt_record([box(0)], ignore=[region])]
    inside = [150, 150, 190, 190]
    half_out = [180, 100, 220, 140]  # IoA 0.5 (less with eps): not absorbed
    result = evaluate([det_record([inside, box(0)], [0.95, 0.9])], gts)
    assert result["num_detections"] == 1 and result["mr"] == 0.0
    assert result["ji"] == pytest.approx(1 / (1 + EPS), abs=1e-15)  # not counted in n either
    result = evaluate([det_record([half_out, box(0)], [0.95, 0.9])], gts)
    assert result["num_detections"] == 2
    np.testing.assert_allclose(result["precision_curve"], [0.0, 0.5])
    assert result["ap"] == pytest.approx(0.25)  # one trapezoid from (0, 0) to (1, 0.5)


def test_ignore_regions_per_class_and_for_all_classes():
    region = [100, 100, 200, 200]
    inside = [150, 150, 190, 190]
    dets = [det_record([inside, box(0)], [0.95, 0.9])]
    other_class = [gt_record([box(0)], ignore=[region], ignore_labels=[1])]
    assert evaluate(dets, other_class)["num_detections"] == 2
    assert evaluate(dets, [gt_record([box(0)], ignore=[region], ignore_labels=[0])])["num_detections"] == 1
    assert evaluate(dets, [gt_record([box(0)], ignore=[region], ignore_labels=[-1])])["num_detections"] == 1


def test_a_matched_box_is_gone_but_an_ignore_region_absorbs_any_number():
    region = [100, 100, 200, 200]
    gts = [gt_record([box(0)], ignore=[region])]
    dets = [det_record([box(0), box(0), [110, 110, 150, 150], [120, 120, 160, 160]], [0.9, 0.8, 0.7, 0.6])]
    result = evaluate(dets, gts)
    # The duplicate of box 0 is an FP (its box is taken, and it is in no region); both boxes in
    # the region are dropped.
    np.testing.assert_allclose(result["precision_curve"], [1.0, 0.5])
    assert result["num_detections"] == 2


def test_duplicate_detection_is_a_false_positive():
    gts = [gt_record([box(0), box(1)])]
    result = evaluate([det_record([box(0), box(0), box(1)], [0.9, 0.8, 0.7])], gts)
    np.testing.assert_allclose(result["precision_curve"], [1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(result["recall_curve"], [0.5, 0.5, 1.0])
    assert result["ap"] == pytest.approx(0.5 * (0.5 + 2 / 3) / 2, abs=1e-12)
    # JI: for t < 0.7 all three count: k=2, n=3, m=2 -> 2/3. t = 0.7 is 0.7000000000000001, so
    # the 0.7 detection is out: k=1, n=2 -> 1/3. t = 0.8 leaves one: 1/2. t = 0.9 leaves none: 0.
    expected = [2 / (3 + EPS)] * 7 + [1 / (3 + EPS), 1 / (2 + EPS), 0.0]
    np.testing.assert_allclose(result["ji_per_threshold"], expected, rtol=0, atol=1e-15)


def test_boxes_are_clipped_to_the_image():
    # The ground truth runs off a 100x100 image; clipped it equals the detection.
    gts = [gt_record([[50, 50, 150, 150]])]
    dets = [det_record([[50, 50, 100, 100]], [0.9])]
    assert evaluate_crowdhuman(dets, gts, 0, [(100, 100)])["ji"] == pytest.approx(1 / (1 + EPS))
    assert evaluate_crowdhuman(dets, gts, 0, [(1000, 1000)])["ji"] == 0.0  # IoU 1/4 unclipped


def test_left_corner_is_clipped_to_w_minus_1_and_nothing_is_dropped():
    # x1 goes to [0, W - 1]: a box beyond the right edge becomes the sliver [99, 100] x [0, 10]
    # and still counts; so does one starting at x1 = 99.5.
    gts = [gt_record([[120, 0, 130, 10], [99.5, 20, 100, 30]])]
    dets = [det_record([[99, 0, 100, 10], [99, 20, 100, 30]], [0.9, 0.8])]
    result = evaluate_crowdhuman(dets, gts, 0, [(100, 100)])
    assert result["num_annotations"] == 2
    np.testing.assert_allclose(result["precision_curve"], [1.0, 1.0])  # both IoU 1 (0 and 1/2 unclipped)
    # An undetected sliver is a miss like any other box.
    result = evaluate_crowdhuman([det_record([[99, 0, 100, 10]], [0.9])], gts, 0, [(100, 100)])
    assert result["recall_curve"].tolist() == [0.5]


def test_equal_ious_go_to_the_first_valid_box():
    # d1 overlaps g1 and g2 by exactly 9/11 each and takes g1; d2 then finds g1 taken and g2
    # below 0.5 (6/14): an FP. Had d1 taken g2, d2 would have matched g1 (8/12).
    g1, g2, d1, d2 = [0, 0, 10, 10], [2, 0, 12, 10], [1, 0, 11, 10], [-2, 0, 8, 10]
    assert iou(d1, g1) == iou(d1, g2) and iou(d2, g1) > 0.5 > iou(d2, g2)
    result = evaluate([det_record([d1, d2], [0.9, 0.8])], [gt_record([g1, g2])])
    np.testing.assert_allclose(result["precision_curve"], [1.0, 0.5])


def test_the_eps_decides_overlaps_just_above_one_half():
    # IoU 100 / (10 h) is just above 0.5 for h = 20 - 5e-8, and just below once eps is added.
    h = 20 - 5e-8
    result = evaluate([det_record([[0, 0, 10, 10]], [0.9])], [gt_record([[0, 0, 10, h]])])
    assert 100 / (10 * h) > 0.5 and result["precision_curve"].tolist() == [0.0]
    # IoA 50.0000005 / 100 is above 0.5 without eps, not with it: the detection stays an FP.
    region = [5 - 5e-8, 0, 20, 10]
    result = evaluate([det_record([[0, 0, 10, 10]], [0.9])], [gt_record([box(5)], ignore=[region])])
    assert result["num_detections"] == 1


def test_equal_scores_keep_image_order_then_the_given_order():
    # Two images with one box each; image 0's detection is an FP, image 1's a TP, both 0.5.
    # Pooled in image order: FP then TP -> (recall, precision) (0, 0), (1/2, 1/2): AP 1/8.
    gts = [gt_record([box(0)]), gt_record([box(0)])]
    result = evaluate([det_record([box(5)], [0.5]), det_record([box(0)], [0.5])], gts)
    assert result["ap"] == pytest.approx(0.125, abs=1e-12)
    # In one image, the first of two equal scores matches first. Both overlap box a (IoU 7/13
    # and 1); a region holds a more than half (IoA 0.55) and near only a quarter, so whichever
    # comes second is dropped (a) or an FP (near).
    a = [0, 0, 10, 10]
    near = [3, 0, 13, 10]
    region = [-10, -5, 5.5, 15]
    gts = [gt_record([a], ignore=[region])]
    result = evaluate([det_record([near, a], [0.5, 0.5])], gts)
    assert result["num_detections"] == 1 and result["precision_curve"].tolist() == [1.0]
    result = evaluate([det_record([a, near], [0.5, 0.5])], gts)
    assert result["num_detections"] == 2


def test_ji_uses_maximum_weight_matching_and_official_thresholds():
    # Detection a (0.9) overlaps g1 by 9/11 and g2 by 7/13; b (0.7) overlaps g1 by 0.9.
    # Greedy by score pairs a-g1 and leaves b; the maximum-weight matching pairs a-g2, b-g1.
    g1, g2 = [0, 0, 10, 10], [4, 0, 14, 10]
    a, b = [1, 0, 11, 10], [0, 0, 9, 10]
    assert iou(a, g2) > 0.5 and iou(a, g1) + iou(b, g2) < iou(a, g2) + iou(b, g1)
    result = evaluate([det_record([a, b], [0.9, 0.7])], [gt_record([g1, g2])])
    assert result["num_detections"] == 2 and result["ap"] == pytest.approx(0.0)  # (0.5, 1) -> (0.5, 0.5)
    # t = 0.0 .. 0.6: k = 2 of m = n = 2. t = 0.7 is 0.7000000000000001, so b (0.7) is out: k = 1, n = 1.
    expected = [2 / (2 + EPS)] * 7 + [1 / (2 + EPS)] * 2 + [0.0]
    np.testing.assert_allclose(result["ji_per_threshold"], expected, rtol=0, atol=1e-15)
    assert result["ji_score_threshold"] == 0.0


def test_ji_discounts_what_lies_in_ignore_regions_and_averages_over_images_with_something():
    region = [100, 100, 200, 200]
    gts = [
        gt_record([box(0), [120, 120, 150, 150]], ignore=[region]),  # an unmatched box in the region
        gt_record(),  # m = n = 0: left out of the mean
        gt_record([], ignore=[region]),  # only a detection in the region: m = n = 0 too
        gt_record(),  # a detection and no box: m = 0, n = 1, counted with JI 0
    ]
    dets = [
        det_record([box(0)], [0.9]),
        det_record(),
        det_record([[110, 110, 150, 150]], [0.8]),
        det_record([box(1)], [0.7]),
    ]
    # Image 0: k = 1, m = 2 - 1, n = 1 -> 1 / (1 + eps); image 3: 0. Two images counted, up to
    # t = 0.7 (0.7000000000000001), which leaves image 3 empty and no longer counted.
    ji = evaluate(dets, gts)["ji_per_threshold"]
    np.testing.assert_allclose(ji, [1 / (1 + EPS) / 2] * 7 + [1 / (1 + EPS)] * 2 + [0.0], rtol=0, atol=1e-15)


def test_other_classes_and_a_score_threshold_when_asked():
    gts = [gt_record([box(0), box(1)], labels=[0, 1])]
    dets = [det_record([box(0), box(1), box(2)], [0.9, 0.9, 0.005], labels=[0, 1, 0])]
    result = evaluate(dets, gts, class_index=1)
    assert result["num_annotations"] == 1 and result["num_detections"] == 1
    # The official protocol scores every detection given; a threshold is ours to ask for.
    assert evaluate(dets, gts, class_index=0)["num_detections"] == 2
    assert evaluate(dets, gts, class_index=0, score_threshold=0.01)["num_detections"] == 1


def test_no_detections_and_no_ground_truth():
    result = evaluate([det_record()], [gt_record([box(0)])])
    assert (result["ap"], result["mr"], result["ji"]) == (0.0, 1.0, 0.0)
    result = evaluate([det_record([box(0)], [0.9])], [gt_record()])
    assert (result["ap"], result["ji"]) == (0.0, 0.0)


# ---- the odgt as the official code reads it -----------------------------------------------------


def write_odgt(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


def person(x, tag="person", extra=None, head_attr=None):
    """A gtbox whose fbox, vbox and hbox tell apart by their widths (40, 30, 10)."""
    gtbox = {"tag": tag, "fbox": [x, 0, 40, 80], "vbox": [x, 0, 30, 60], "hbox": [x, 0, 10, 10]}
    if extra is not None:
        gtbox["extra"] = extra
    if head_attr is not None:
        gtbox["head_attr"] = head_attr
    return gtbox


def test_odgt_valid_and_ignored_boxes_per_kind(tmp_path):
    odgt = write_odgt(tmp_path / "gt.odgt", [{"ID": "a", "gtboxes": [
        person(0, extra={"box_id": 0}, head_attr={"ignore": 0}),
        person(100, tag="mask", extra={"ignore": 1}, head_attr={}),
        person(200, extra={"ignore": 1}),  # an ignored person: body and head ignored
        person(300, head_attr={"ignore": 1}),  # a valid body with an ignored head
        person(400),
    ]}])
    full = read_odgt_ground_truth(odgt, ["person", "head"], "full").annotations[0]
    bodies = full["labels"] == 0
    assert full["boxes"][bodies].tolist() == [[0, 0, 40, 80], [300, 0, 340, 80], [400, 0, 440, 80]]
    assert full["ignore"][full["ignore_labels"] == 0].tolist() == [[100, 0, 140, 80], [200, 0, 240, 80]]
    assert full["boxes"][~bodies].tolist() == [[0, 0, 10, 10], [400, 0, 410, 10]]
    assert full["ignore"][full["ignore_labels"] == 1][:, 0].tolist() == [100, 200, 300]
    visible = read_odgt_ground_truth(odgt, ["person"], "visible").annotations[0]
    assert visible["boxes"][:, 2].tolist() == [30, 330, 430] and visible["ignore"][:, 2].tolist() == [130, 230]
    heads = read_odgt_ground_truth(odgt, ["person", "head"], "head").annotations[0]
    assert set(heads["labels"].tolist()) == {1} and heads["ignore"][:, 0].tolist() == [100, 200, 300]


def test_odgt_sizes_from_the_records_then_the_detections(tmp_path):
    odgt = write_odgt(tmp_path / "gt.odgt", [
        {"ID": "a", "height": 50, "width": 60, "gtboxes": [person(0), person(100)]},
        {"ID": "b", "gtboxes": [person(0)]},
    ])
    truth = read_odgt_ground_truth(odgt, ["person"], "full")
    assert truth.image_sizes == [(50, 60), None]
    # The ground-truth record's size wins over the detection record's, as in the official code.
    assert resolve_image_sizes(truth, [(5, 6), (70, 80)]) == [(50, 60), (70, 80)]
    with pytest.raises(UserError, match=r"gt.odgt:2: no size for image 'b': .*\(1 such images\); give --images_dir"):
        resolve_image_sizes(truth, [(5, 6), None])
    dataset = odgt_dataset(truth, [(50, 60), (70, 80)], ["a.jpg", "b.jpg"])
    assert dataset.image_size(0) == (50, 60)
    # Clipped the official way: y2 to H, and x1 of the box right of the image to W - 1.
    assert dataset.annotations(0)["boxes"].tolist() == [[0, 0, 40, 50], [59, 0, 60, 50]]


@pytest.mark.parametrize("record, message", [
    ({"ID": "a", "gtboxes": [person(0, tag="car")]}, "gtbox 0: unknown tag 'car'"),
    ({"ID": "a", "gtboxes": [{"tag": "person", "fbox": [0, 0, 1]}]}, r"gtbox 0: 'fbox' must be \[x, y, width"),
    ({"ID": "a", "gtboxes": [{"tag": "person", "fbox": [0, 0, -1, 1]}]}, r"gtbox 0: 'fbox' \[0, 0, -1, 1\] has a"),
    ({"ID": "a", "gtboxes": [person(0, extra=1)]}, "gtbox 0: 'extra' must be an object"),
    ({"ID": "a", "height": 0, "width": 5, "gtboxes": []}, '"height" must be a positive integer'),
])
def test_odgt_bad_records(tmp_path, record, message):
    odgt = write_odgt(tmp_path / "gt.odgt", [{"ID": "z", "gtboxes": []}, record])
    with pytest.raises(UserError, match=f"gt.odgt:2: {message}"):
        read_odgt_ground_truth(odgt, ["person", "head"], "full")


def test_odgt_image_twice(tmp_path):
    odgt = write_odgt(tmp_path / "gt.odgt", [{"ID": "a", "gtboxes": []}, {"ID": "a", "gtboxes": []}])
    with pytest.raises(UserError, match=r"gt.odgt:2: image 'a' again \(first on line 1\)"):
        read_odgt_ground_truth(odgt, ["person"], "full")
