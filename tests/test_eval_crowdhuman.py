"""CrowdHuman protocol (retinanet.evaluation.crowdhuman): hand-computed cases and a plain-Python reference."""

import math

import numpy as np
import pytest

from retinanet.evaluation import matching
from retinanet.evaluation.crowdhuman import evaluate_crowdhuman

SIZE = (1000, 1000)  # (H, W) large enough that nothing below is clipped unless a test says so


def gt_record(boxes=(), labels=None, ignore=(), ignore_labels=None):
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    ignore = np.array(ignore, dtype=np.float32).reshape(-1, 4)
    return {
        "boxes": boxes,
        "labels": np.zeros(len(boxes), dtype=np.int64)
        if labels is None
        else np.array(labels, dtype=np.int64),
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


def test_perfect_detections():
    gts = [gt_record([box(0), box(1), box(2)]), gt_record([box(3)])]
    dets = [det_record([box(0), box(1), box(2)], [0.9, 0.8, 0.7]), det_record([box(3)], [0.6])]
    result = evaluate(dets, gts)
    # The official trapezoids start at the first detection (recall 1/4), not at recall 0:
    # a perfect detector on N boxes scores (N - 1) / N, which tends to 1 on real data.
    assert result["ap"] == pytest.approx(3 / 4, abs=1e-12)
    assert result["mr"] == 0.0
    assert result["ji"] == 1.0
    assert result["num_annotations"] == 4 and result["num_detections"] == 4


def test_false_positive_first_at_fppi_one_tenth():
    # 10 images, one box each; the best-scored detection is an FP, then 5 TPs.
    gts = [gt_record([box(i)]) for i in range(10)]
    dets = [det_record([box(0), box(20)], [0.90, 0.95])] + [
        det_record([box(i)], [0.9 - i / 100]) for i in range(1, 5)
    ]
    dets += [det_record() for _ in range(5)]
    result = evaluate(dets, gts)
    # Points (recall, precision): (0, 0), (.1, 1/2), (.2, 2/3), (.3, 3/4), (.4, 4/5), (.5, 5/6).
    recall = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    precision = [0.0, 1 / 2, 2 / 3, 3 / 4, 4 / 5, 5 / 6]
    expected_ap = sum(
        (recall[i] - recall[i - 1]) * (precision[i] + precision[i - 1]) / 2 for i in range(1, 6)
    )
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
    assert result["ji"] == 1.0  # the ignored detection is not counted in n either
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


def test_duplicate_detection_is_a_false_positive():
    gts = [gt_record([box(0), box(1)])]
    result = evaluate([det_record([box(0), box(0), box(1)], [0.9, 0.8, 0.7])], gts)
    np.testing.assert_allclose(result["precision_curve"], [1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(result["recall_curve"], [0.5, 0.5, 1.0])
    assert result["ap"] == pytest.approx(0.5 * (0.5 + 2 / 3) / 2, abs=1e-12)
    # JI: for t < 0.7 all three count: k=2, n=3, m=2 -> 2/3. t = 0.7 is 0.7000000000000001, so
    # the 0.7 detection is out: k=1, n=2 -> 1/3. t = 0.8 leaves one: 1/2. t = 0.9 leaves none: 0.
    np.testing.assert_allclose(result["ji_per_threshold"], [2 / 3] * 7 + [1 / 3, 0.5, 0.0])


def test_boxes_are_clipped_to_the_image():
    # The ground truth runs off a 100x100 image; clipped it equals the detection.
    gts = [gt_record([[50, 50, 150, 150]])]
    dets = [det_record([[50, 50, 100, 100]], [0.9])]
    assert evaluate_crowdhuman(dets, gts, 0, [(100, 100)])["ji"] == 1.0
    assert evaluate_crowdhuman(dets, gts, 0, [(1000, 1000)])["ji"] == 0.0  # IoU 1/4 unclipped


def test_ji_uses_maximum_weight_matching_and_official_thresholds():
    # Detection a (0.9) overlaps g1 by 9/11 and g2 by 7/13; b (0.7) overlaps g1 by 0.9.
    # Greedy by score pairs a-g1 and leaves b; the maximum-weight matching pairs a-g2, b-g1.
    g1, g2 = [0, 0, 10, 10], [4, 0, 14, 10]
    a, b = [1, 0, 11, 10], [0, 0, 9, 10]
    result = evaluate([det_record([a, b], [0.9, 0.7])], [gt_record([g1, g2])])
    assert result["num_detections"] == 2 and result["ap"] == pytest.approx(0.0)  # (0.5, 1) -> (0.5, 0.5)
    # t = 0.0 .. 0.6: k = 2 of m = n = 2. t = 0.7 is 0.7000000000000001, so b (0.7) is out: k = 1, n = 1.
    np.testing.assert_allclose(result["ji_per_threshold"], [1.0] * 7 + [0.5, 0.5, 0.0])
    assert result["ji"] == 1.0 and result["ji_score_threshold"] == 0.0


def test_ji_discounts_ground_truth_inside_ignore_regions_and_skips_empty_images():
    region = [100, 100, 200, 200]
    gts = [gt_record([box(0), [120, 120, 150, 150]], ignore=[region]), gt_record(), gt_record([box(1)])]
    dets = [det_record([box(0)], [0.9]), det_record(), det_record([box(1)], [0.8])]
    # Image 0: the unmatched box inside the region is not counted (m = 1); image 1 has m = n = 0
    # and is left out of the mean.
    assert evaluate(dets, gts)["ji"] == 1.0


def test_other_classes_and_low_scores_are_left_out():
    gts = [gt_record([box(0), box(1)], labels=[0, 1])]
    dets = [det_record([box(0), box(1), box(2)], [0.9, 0.9, 0.005], labels=[0, 1, 0])]
    result = evaluate(dets, gts, class_index=1)
    assert result["num_annotations"] == 1 and result["num_detections"] == 1 and result["ji"] == 1.0
    assert evaluate(dets, gts, class_index=0)["num_detections"] == 1  # 0.005 < 0.01
    assert evaluate(dets, gts, class_index=0, score_threshold=0.0)["num_detections"] == 2


def test_no_detections_and_no_ground_truth():
    result = evaluate([det_record()], [gt_record([box(0)])])
    assert (result["ap"], result["mr"], result["ji"]) == (0.0, 1.0, 0.0)
    result = evaluate([det_record([box(0)], [0.9])], [gt_record()])
    assert (result["ap"], result["ji"]) == (0.0, 0.0)


# ---- plain-Python reference on random data ----------------------------------------------------


def reference(detections, ground_truths, cls, sizes, score_threshold):
    """The protocol written with loops: per-detection matching, brute-force maximum-weight matching."""
    eps = 1e-6
    refs = [0.0100, 0.0178, 0.0316, 0.0562, 0.1000, 0.1778, 0.3162, 0.5623, 1.0000]

    def clip(b, h, w):
        return [
            min(max(b[0], 0), w - 1),
            min(max(b[1], 0), h - 1),
            max(min(b[2], w), 0),
            max(min(b[3], h), 0),
        ]

    def area(b):
        return max(b[2] - b[0], 0) * max(b[3] - b[1], 0)

    def inter(a, b):
        return max(min(a[2], b[2]) - max(a[0], b[0]), 0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0)

    def iou(a, b):
        return inter(a, b) / (area(a) + area(b) - inter(a, b) + eps)

    def ignored(b, regions):
        return any(inter(b, r) / (area(b) + eps) > 0.5 for r in regions)

    def best_matching(weights, det_index, used):
        """(total weight, pairs) of the heaviest matching of detections det_index.. to unused GT."""
        if det_index == len(weights):
            return 0.0, []
        best = best_matching(weights, det_index + 1, used)
        for j, w in weights[det_index].items():
            if j not in used:
                rest = best_matching(weights, det_index + 1, used | {j})
                if rest[0] + w > best[0]:
                    best = (rest[0] + w, [(det_index, j)] + rest[1])
        return best

    pooled, total = [], 0
    ji_sums, ji_counts = [0.0] * 10, [0] * 10
    for det, gt, (h, w) in zip(detections, ground_truths, sizes):
        valid = [clip(list(map(float, b)), h, w) for b, lab in zip(gt["boxes"], gt["labels"]) if lab == cls]
        regions = [
            clip(list(map(float, r)), h, w)
            for r, lab in zip(gt["ignore"], gt["ignore_labels"])
            if lab in (cls, -1)
        ]
        total += len(valid)
        mine = sorted(
            [
                (float(s), clip(list(map(float, b)), h, w))
                for b, s, lab in zip(det["boxes"], det["scores"], det["labels"])
                if lab == cls and s >= score_threshold
            ],
            key=lambda item: -item[0],
        )
        taken = set()
        for score, b in mine:
            best, best_iou = None, 0.5
            for j, g in enumerate(valid):
                if j not in taken and iou(b, g) > best_iou:
                    best, best_iou = j, iou(b, g)
            if best is not None:
                taken.add(best)
                pooled.append((score, True))
            elif not ignored(b, regions):
                pooled.append((score, False))
        for i in range(10):
            kept = [b for s, b in mine if s > 0.1 * i]
            weights = [{j: iou(b, g) for j, g in enumerate(valid) if iou(b, g) > 0.5} for b in kept]
            pairs = best_matching(weights, 0, frozenset())[1]
            k = len(pairs)
            matched_dets, matched_gts = {p[0] for p in pairs}, {p[1] for p in pairs}
            n = len(kept) - sum(
                1 for d, b in enumerate(kept) if d not in matched_dets and ignored(b, regions)
            )
            m = len(valid) - sum(
                1 for j, g in enumerate(valid) if j not in matched_gts and ignored(g, regions)
            )
            ji_sums[i] += k / (m + n - k) if m + n - k > 0 else 0.0
            ji_counts[i] += 1 if (m or n) else 0
    pooled.sort(key=lambda item: -item[0])
    tp = fp = 0
    recall, precision, fppi = [], [], []
    for _, hit in pooled:
        tp, fp = tp + hit, fp + (not hit)
        recall.append(tp / total)
        precision.append(tp / (tp + fp))
        fppi.append(fp / len(ground_truths))
    ap = sum(
        (recall[i] - recall[i - 1]) * (precision[i] + precision[i - 1]) / 2 for i in range(1, len(recall))
    )
    rates = []
    for ref in refs:
        at = next((i for i, f in enumerate(fppi) if f >= ref), len(fppi) - 1)
        rates.append(1 - recall[at])
    mr = math.exp(sum(math.log(r) for r in rates) / 9) if min(rates) > 0 else 0.0
    ji = [s / c if c else 0.0 for s, c in zip(ji_sums, ji_counts)]
    return ap, mr, ji


def random_crowd(rng, num_images):
    detections, ground_truths, sizes = [], [], []
    for _ in range(num_images):
        h, w = int(rng.integers(80, 200)), int(rng.integers(80, 200))
        n = int(rng.integers(0, 6))
        xy = rng.uniform(-20, 100, size=(n, 2))  # crowded, and some boxes run off the image
        gt_boxes = np.hstack([xy, xy + rng.uniform(15, 60, size=(n, 2))])
        gt_labels = rng.integers(0, 2, size=n)
        near = np.repeat(gt_boxes, 2, axis=0) + rng.normal(0, 5, size=(2 * n, 4))
        far_xy = rng.uniform(0, 180, size=(3, 2))
        far = np.hstack([far_xy, far_xy + rng.uniform(10, 50, size=(3, 2))])
        boxes = np.vstack([near, far])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        m = int(rng.integers(0, 3))
        ign_xy = rng.uniform(0, 150, size=(m, 2))
        detections.append(
            {
                "boxes": boxes,
                "scores": np.round(
                    rng.uniform(0, 1, size=len(boxes)), 1
                ),  # ties, and scores equal to 0.1 * i
                "labels": np.concatenate([np.repeat(gt_labels, 2), rng.integers(0, 2, size=3)]),
            }
        )
        ground_truths.append(
            {
                "boxes": gt_boxes.astype(np.float32),
                "labels": gt_labels,
                "ignore": np.hstack([ign_xy, ign_xy + rng.uniform(20, 90, size=(m, 2))]).astype(np.float32),
                "ignore_labels": rng.integers(-1, 2, size=m),
            }
        )
        sizes.append((h, w))
    return detections, ground_truths, sizes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_plain_python_reference(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    detections, ground_truths, sizes = random_crowd(rng, 60)
    for cls in (0, 1):
        ap, mr, ji = reference(detections, ground_truths, cls, sizes, 0.01)
        result = evaluate_crowdhuman(detections, ground_truths, cls, sizes)
        assert result["ap"] == pytest.approx(ap, abs=1e-12)
        assert result["mr"] == pytest.approx(mr, abs=1e-12)
        np.testing.assert_allclose(result["ji_per_threshold"], ji, rtol=0, atol=1e-12)
        assert result["ji"] == pytest.approx(max(ji), abs=1e-12)
        monkeypatch.setattr(matching, "BLOCK_ELEMENTS", 30)
        small_blocks = evaluate_crowdhuman(detections, ground_truths, cls, sizes)
        monkeypatch.undo()
        assert (small_blocks["ap"], small_blocks["mr"], small_blocks["ji"]) == (
            result["ap"],
            result["mr"],
            result["ji"],
        )
