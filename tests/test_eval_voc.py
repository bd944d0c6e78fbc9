"""VOC AP (retinanet.evaluation.voc), the shared matching helpers, and the report built on VOC results."""

import json

import numpy as np
import pytest

from retinanet.evaluation import matching
from retinanet.evaluation.matching import box_ioa, box_iou, greedy_match, iter_group_blocks
from retinanet.evaluation.report import build_metrics_json, format_summary, plot_pr_curves
from retinanet.evaluation.voc import evaluate_voc


def gt_record(boxes=(), labels=(), ignore=(), ignore_labels=()):
    return {
        "boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4),
        "labels": np.array(labels, dtype=np.int64),
        "ignore": np.array(ignore, dtype=np.float32).reshape(-1, 4),
        "ignore_labels": np.array(ignore_labels, dtype=np.int64),
    }


def det_record(boxes=(), scores=(), labels=None):
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.zeros(len(boxes), dtype=np.int64) if labels is None else np.array(labels, dtype=np.int64)
    return {"boxes": boxes, "scores": np.array(scores, dtype=np.float64), "labels": labels}


A, B, C = [0, 0, 10, 10], [20, 20, 40, 40], [50, 0, 60, 10]


# ---- matching helpers ---------------------------------------------------------------------------


def test_box_iou_and_ioa_hand_values():
    ious = box_iou(
        np.array([[0.0, 0, 10, 10]]), np.array([[5.0, 0, 15, 10], [0, 0, 10, 20], [20, 20, 30, 30]])
    )
    np.testing.assert_allclose(ious, [[50 / 150, 0.5, 0.0]])
    ioas = box_ioa(np.array([[0.0, 0, 10, 10], [3, 3, 3, 3]]), np.array([[5.0, 0, 100, 100]]))
    np.testing.assert_allclose(ioas, [[0.5], [0.0]])  # a zero-area box lies in nothing


def test_greedy_match_takes_best_unmatched_ground_truth():
    gt = np.array([[0.0, 0, 10, 10], [2, 0, 12, 10]])
    dets = np.array([[1.0, 0, 11, 10], [1, 0, 11, 10], [1, 0, 11, 10]])
    groups = np.zeros(3, dtype=np.int64)
    # Both ground truths overlap each detection by 90/110: the first takes index 0 (tie), the
    # second the remaining one, the third finds nothing left.
    matches = greedy_match(dets, groups, gt, np.zeros(2, dtype=np.int64), 1, 0.5, inclusive=True)
    assert matches.tolist() == [0, 1, -1]


def test_greedy_match_threshold_inclusive_or_strict():
    dets, gt = np.array([[0.0, 0, 10, 10]]), np.array([[0.0, 0, 10, 20]])  # IoU exactly 0.5
    zero = np.zeros(1, dtype=np.int64)
    assert greedy_match(dets, zero, gt, zero, 1, 0.5, inclusive=True).tolist() == [0]
    assert greedy_match(dets, zero, gt, zero, 1, 0.5, inclusive=False).tolist() == [-1]


def test_group_blocks_cover_every_pair_once(monkeypatch):
    rng = np.random.default_rng(0)
    row_groups = rng.integers(0, 30, size=200)
    col_groups = rng.integers(0, 30, size=90)
    monkeypatch.setattr(matching, "BLOCK_ELEMENTS", 50)
    pairs = set()
    for block in iter_group_blocks(row_groups, col_groups, 30):
        for slot, group in enumerate(block.groups):
            rows = block.rows[slot][block.rows[slot] >= 0]
            cols = block.cols[slot][block.cols[slot] >= 0]
            assert (row_groups[rows] == group).all() and (col_groups[cols] == group).all()
            assert (np.diff(rows) > 0).all()  # input order kept inside a group
            pairs |= {(r, c) for r in rows for c in cols}
    expected = {(r, c) for r in range(200) for c in range(90) if row_groups[r] == col_groups[c]}
    assert pairs == expected


# ---- hand-computed VOC cases ---------------------------------------------------------------------


def test_perfect_detections_give_ap_one():
    gts = [gt_record([A, B], [0, 0]), gt_record([C], [0])]
    dets = [det_record([A, B], [0.9, 0.8]), det_record([C], [0.7])]
    result = evaluate_voc(dets, gts, num_classes=1)
    assert result["map"] == 1.0
    per_class = result["per_class"][0]
    assert (per_class["ap"], per_class["precision"], per_class["recall"]) == (1.0, 1.0, 1.0)
    assert per_class["num_annotations"] == 3


def test_false_positive_between_true_positives():
    # Sorted: TP (0.9), FP (0.8), TP (0.7). precision 1, 1/2, 2/3; recall 1/2, 1/2, 1.
    # Envelope 1, 2/3, 2/3 -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    dets = [det_record([A, C, B], [0.9, 0.8, 0.7])]
    result = evaluate_voc(dets, [gt_record([A, B], [0, 0])], num_classes=1)
    per_class = result["per_class"][0]
    assert per_class["ap"] == pytest.approx(5 / 6, abs=1e-12)
    np.testing.assert_allclose(per_class["precision_curve"], [1, 1 / 2, 2 / 3])
    np.testing.assert_allclose(per_class["recall_curve"], [1 / 2, 1 / 2, 1])
    np.testing.assert_allclose(per_class["envelope_curve"], [1, 2 / 3, 2 / 3])
    np.testing.assert_allclose(per_class["scores"], [0.9, 0.8, 0.7])
    assert (per_class["true_positives"], per_class["false_positives"]) == (2, 1)
    assert per_class["precision"] == pytest.approx(2 / 3)


def test_duplicate_detection_is_a_false_positive():
    dets = [det_record([A, A], [0.9, 0.8])]
    per_class = evaluate_voc(dets, [gt_record([A], [0])], num_classes=1)["per_class"][0]
    assert per_class["ap"] == 1.0  # full recall is reached before the duplicate
    assert (per_class["false_positives"], per_class["precision"]) == (1, 0.5)


def test_missed_ground_truth_halves_recall():
    per_class = evaluate_voc([det_record([A], [0.9])], [gt_record([A, B], [0, 0])], num_classes=1)[
        "per_class"
    ][0]
    assert (per_class["ap"], per_class["recall"], per_class["precision"]) == (0.5, 0.5, 1.0)


def test_detection_inside_ignore_region_is_dropped():
    region = [100, 100, 200, 200]
    inside = [110, 110, 150, 150]  # IoA 1
    half_out = [180, 100, 220, 140]  # IoA 0.5: not more than half inside -> still a false positive
    gts = [gt_record([A], [0], ignore=[region], ignore_labels=[-1])]
    dropped = evaluate_voc([det_record([inside, A], [0.95, 0.9])], gts, num_classes=1)["per_class"][0]
    assert (dropped["ap"], dropped["num_detections"], dropped["false_positives"]) == (1.0, 1, 0)
    kept = evaluate_voc([det_record([half_out, A], [0.95, 0.9])], gts, num_classes=1)["per_class"][0]
    assert (kept["ap"], kept["false_positives"]) == (0.5, 1)  # precision 1/2 at recall 1


def test_ignore_region_of_one_class_or_all_classes():
    region = [100, 100, 200, 200]
    inside = [110, 110, 150, 150]
    dets = [det_record([inside, A, inside, B], [0.95, 0.9, 0.95, 0.9], labels=[0, 0, 1, 1])]
    only_class_1 = [gt_record([A, B], [0, 1], ignore=[region], ignore_labels=[1])]
    per_class = evaluate_voc(dets, only_class_1, num_classes=2)["per_class"]
    assert per_class[0]["false_positives"] == 1 and per_class[0]["ap"] == 0.5
    assert per_class[1]["false_positives"] == 0 and per_class[1]["ap"] == 1.0
    every_class = [gt_record([A, B], [0, 1], ignore=[region], ignore_labels=[-1])]
    per_class = evaluate_voc(dets, every_class, num_classes=2)["per_class"]
    assert per_class[0]["false_positives"] == per_class[1]["false_positives"] == 0


def test_match_comes_before_ignore():
    # A detection on a ground-truth box that also lies in an ignore region is a true positive.
    gts = [gt_record([A], [0], ignore=[[0, 0, 50, 50]], ignore_labels=[-1])]
    per_class = evaluate_voc([det_record([A], [0.9])], gts, num_classes=1)["per_class"][0]
    assert (per_class["true_positives"], per_class["ap"]) == (1, 1.0)


def test_second_detection_takes_the_next_unmatched_ground_truth():
    gts = [gt_record([[0, 0, 10, 10], [2, 0, 12, 10]], [0, 0])]
    dets = [det_record([[1, 0, 11, 10], [1, 0, 11, 10]], [0.9, 0.8])]
    assert evaluate_voc(dets, gts, num_classes=1)["per_class"][0]["ap"] == 1.0


def test_iou_threshold_is_inclusive_and_configurable():
    gts = [gt_record([[0, 0, 10, 20]], [0])]
    dets = [det_record([[0, 0, 10, 10]], [0.9])]  # IoU exactly 0.5
    assert evaluate_voc(dets, gts, num_classes=1)["map"] == 1.0
    assert evaluate_voc(dets, gts, num_classes=1, iou_threshold=0.51)["map"] == 0.0


def test_score_threshold_drops_low_scores():
    dets = [det_record([C, A], [0.9, 0.04])]
    gts = [gt_record([A], [0])]
    assert evaluate_voc(dets, gts, num_classes=1)["per_class"][0]["num_detections"] == 1
    assert evaluate_voc(dets, gts, num_classes=1)["map"] == 0.0
    assert evaluate_voc(dets, gts, num_classes=1, score_threshold=0.01)["map"] == 0.5  # FP then TP


def test_map_skips_classes_without_annotations():
    gts = [gt_record([A, B], [0, 0])]
    dets = [det_record([A, C], [0.9, 0.9], labels=[0, 2])]
    result = evaluate_voc(dets, gts, num_classes=3)
    assert result["map"] == 0.5
    assert result["per_class"][2]["ap"] == 0.0 and result["per_class"][1]["num_detections"] == 0


def test_no_images_and_no_detections():
    assert evaluate_voc([], [], num_classes=2)["map"] == 0.0
    result = evaluate_voc([det_record()], [gt_record([A], [0])], num_classes=1)
    assert result["per_class"][0]["ap"] == 0.0 and result["per_class"][0]["recall"] == 0.0


def test_label_outside_classes_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        evaluate_voc([det_record([A], [0.9], labels=[3])], [gt_record([A], [0])], num_classes=2)


# ---- independent reference on random data ---------------------------------------------------


def reference_ap(detections, ground_truths, num_classes, iou_threshold, score_threshold):
    """Plain-Python VOC AP: loops, tuples and the sentinel form of the envelope."""

    def area(b):
        return max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)

    def inter(a, b):
        return max(min(a[2], b[2]) - max(a[0], b[0]), 0.0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)

    aps = []
    for cls in range(num_classes):
        pooled = []  # (score, is_tp) in image order
        total = 0
        for det, gt in zip(detections, ground_truths):
            gt_boxes = [list(map(float, b)) for b, lab in zip(gt["boxes"], gt["labels"]) if lab == cls]
            regions = [
                list(map(float, r)) for r, lab in zip(gt["ignore"], gt["ignore_labels"]) if lab in (cls, -1)
            ]
            total += len(gt_boxes)
            mine = [
                (float(s), list(map(float, b)))
                for b, s, lab in zip(det["boxes"], det["scores"], det["labels"])
                if lab == cls and s >= score_threshold
            ]
            mine.sort(key=lambda item: -item[0])
            used = [False] * len(gt_boxes)
            for score, box in mine:
                best, best_iou = None, -1.0
                for j, g in enumerate(gt_boxes):
                    union = area(box) + area(g) - inter(box, g)
                    iou = inter(box, g) / union if union > 0 else 0.0
                    if not used[j] and iou > best_iou:
                        best, best_iou = j, iou
                if best is not None and best_iou >= iou_threshold:
                    used[best] = True
                    pooled.append((score, True))
                elif any(area(box) > 0 and inter(box, r) / area(box) > 0.5 for r in regions):
                    continue
                else:
                    pooled.append((score, False))
        pooled.sort(key=lambda item: -item[0])
        tp = fp = 0
        recall, precision = [0.0], [0.0]
        for _, hit in pooled:
            tp, fp = tp + hit, fp + (not hit)
            recall.append(tp / total if total else 0.0)
            precision.append(tp / (tp + fp))
        recall.append(1.0)
        precision.append(0.0)
        for i in range(len(precision) - 2, -1, -1):
            precision[i] = max(precision[i], precision[i + 1])
        ap = sum((recall[i + 1] - recall[i]) * precision[i + 1] for i in range(len(recall) - 1))
        aps.append((ap, total))
    return aps


def random_data(rng, num_images, num_classes):
    detections, ground_truths = [], []
    for _ in range(num_images):
        n = int(rng.integers(0, 8))
        xy = rng.uniform(0, 200, size=(n, 2))
        wh = rng.uniform(10, 60, size=(n, 2))
        gt_boxes = np.hstack([xy, xy + wh])
        gt_labels = rng.integers(0, num_classes, size=n)
        jitter = np.repeat(gt_boxes, 2, axis=0) + rng.normal(0, 4, size=(2 * n, 4))
        noise_xy = rng.uniform(0, 200, size=(4, 2))
        noise = np.hstack([noise_xy, noise_xy + rng.uniform(5, 50, size=(4, 2))])
        boxes = np.vstack([jitter, noise])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
        labels = np.concatenate([np.repeat(gt_labels, 2), rng.integers(0, num_classes, size=4)])
        # Rounded scores make ties, which both sides break by image order then input order.
        scores = np.round(rng.uniform(0, 1, size=len(boxes)), 1)
        m = int(rng.integers(0, 3))
        ign_xy = rng.uniform(0, 200, size=(m, 2))
        ignore = np.hstack([ign_xy, ign_xy + rng.uniform(20, 80, size=(m, 2))])
        detections.append({"boxes": boxes, "scores": scores, "labels": labels})
        ground_truths.append(
            {
                "boxes": gt_boxes.astype(np.float32),
                "labels": gt_labels,
                "ignore": ignore.astype(np.float32),
                "ignore_labels": rng.integers(-1, num_classes, size=m),
            }
        )
    return detections, ground_truths


@pytest.mark.parametrize("seed, iou_threshold", [(0, 0.5), (1, 0.3), (2, 0.7)])
def test_matches_plain_python_reference(seed, iou_threshold, monkeypatch):
    rng = np.random.default_rng(seed)
    detections, ground_truths = random_data(rng, num_images=40, num_classes=3)
    expected = reference_ap(detections, ground_truths, 3, iou_threshold, 0.05)
    result = evaluate_voc(detections, ground_truths, 3, iou_threshold=iou_threshold)
    for cls, (ap, total) in enumerate(expected):
        assert result["per_class"][cls]["ap"] == pytest.approx(ap, abs=1e-12)
        assert result["per_class"][cls]["num_annotations"] == total
    assert result["map"] == pytest.approx(np.mean([ap for ap, total in expected if total]), abs=1e-12)
    # Tiny blocks split the data set into many padded blocks: same answer.
    monkeypatch.setattr(matching, "BLOCK_ELEMENTS", 40)
    small_blocks = evaluate_voc(detections, ground_truths, 3, iou_threshold=iou_threshold)
    assert [small_blocks["per_class"][c]["ap"] for c in range(3)] == [
        result["per_class"][c]["ap"] for c in range(3)
    ]


# ---- report built on VOC results --------------------------------------------------------------


def two_class_result():
    gts = [gt_record([A, B], [0, 1])]
    dets = [det_record([A, C, B], [0.9, 0.8, 0.7], labels=[0, 0, 1])]
    return evaluate_voc(dets, gts, num_classes=2)


def test_metrics_json_and_summary():
    result = two_class_result()
    crowdhuman = {
        "person": {
            "ap": 0.9,
            "mr": 0.4,
            "ji": 0.8,
            "ji_score_threshold": 0.1 * 7,  # 0.7000000000000001, as the protocol computes it
            "num_annotations": 1,
            "score_threshold": 0.01,
        }
    }
    document = build_metrics_json(result, ["person", "head"], crowdhuman, settings={"model": "m.pt"})
    json.dumps(document)  # serialisable as is
    assert document["map"] == 1.0
    assert document["per_class"]["person"] == {
        "ap": 1.0,
        "num_annotations": 1,
        "num_detections": 2,
        "precision": 0.5,
        "recall": 1.0,
    }
    assert document["crowdhuman"]["person"]["mr"] == 0.4
    assert document["crowdhuman"]["person"]["ji_score_threshold"] == 0.7
    assert document["settings"] == {
        "iou_threshold": 0.5,
        "score_threshold": 0.05,
        "num_images": 1,
        "crowdhuman_score_threshold": 0.01,
        "model": "m.pt",
    }
    coco_only = build_metrics_json(result, ["person", "head"], coco_result={"AP": 0.25, "APs": -1.0})
    assert coco_only["coco"] == {"AP": 0.25, "APs": -1.0} and "crowdhuman" not in coco_only
    text = format_summary(result, ["person", "head"], crowdhuman)
    assert "person   1.0000         1         2     0.5000   1.0000" in text
    assert "mAP      1.0000" in text
    assert "person   0.9000   0.4000   0.8000            0.7" in text


def test_pr_curve_pngs(tmp_path):
    paths = plot_pr_curves(two_class_result(), ["person", "head/face"], tmp_path / "curves")
    assert [p.name for p in paths] == ["person_precision_recall.png", "head_face_precision_recall.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "curves").iterdir()) == sorted(p.name for p in paths)
