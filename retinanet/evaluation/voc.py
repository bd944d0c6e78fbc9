"""VOC-style average precision per class, honouring ignore regions.

For each class c, with the detections of all images pooled:

* only detections with ``score >= score_threshold`` take part;
* per image, detections in descending score order: detection d takes the still
  unmatched ground truth g of class c with the highest IoU(d, g), if
  IoU >= iou_threshold -> true positive (ties go to the earlier ground truth);
  otherwise, if IoA(d, r) = |d ∩ r| / |d| > 0.5 for an ignore region r of class c
  (or of every class, ``ignore_labels == -1``) -> dropped, neither TP nor FP;
  otherwise -> false positive;
* the kept detections sorted by descending score (ties in image order); after the k-th,
  with N_c ground-truth boxes of class c::

      recall_k    = TP_k / N_c
      precision_k = TP_k / (TP_k + FP_k)
      AP_c        = sum_k (recall_k - recall_{k-1}) * max_{j >= k} precision_j,   recall_0 = 0

  i.e. all-point interpolation (VOC2010+, and yhenon's ``csv_eval``): the precision
  envelope summed over the recall steps;
* mAP = mean of AP_c over the classes with N_c > 0 (a class without ground truth has
  AP 0 and is left out of the mean);
* "precision"/"recall" of a class are the last point of its curve: over all its kept
  detections, i.e. at ``score_threshold``.

One deliberate difference from yhenon's evaluator: there a detection whose best
ground truth is already taken is a false positive even if another ground truth
overlaps it enough; here it takes the best still-unmatched one (greedy, as COCO).
"""

from typing import Sequence

import numpy as np

from retinanet.evaluation.matching import (
    IGNORE_IOA_THRESHOLD,
    FlatGroundTruth,
    flatten_detections,
    flatten_ground_truths,
    greedy_match,
    max_ioa_in_group,
)


def _check_labels(labels: np.ndarray, low: int, num_classes: int, what: str) -> None:
    bad = (labels < low) | (labels >= num_classes)
    if bad.any():
        raise ValueError(f"{what} label {labels[bad][0]} is outside [{low}, {num_classes})")


def ignore_regions_per_class(
    gt: FlatGroundTruth, num_classes: int
) -> "tuple[np.ndarray, np.ndarray, np.ndarray]":
    """Ignore regions with one copy of each all-class region (label -1) per class.

    Returns regions (R, 4), labels (R,) in [0, num_classes), images (R,).
    """
    every_class = gt.ignore_labels < 0
    count = int(every_class.sum())
    regions = np.concatenate(
        [gt.ignore[~every_class], np.repeat(gt.ignore[every_class], num_classes, axis=0)]
    )
    labels = np.concatenate([gt.ignore_labels[~every_class], np.tile(np.arange(num_classes), count)])
    images = np.concatenate(
        [gt.ignore_images[~every_class], np.repeat(gt.ignore_images[every_class], num_classes)]
    )
    return regions, labels, images


def _segment_cumsum(values: np.ndarray, segments: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each segment; values (N,) sorted by segment, starts (K,) first index."""
    total = np.cumsum(values)
    before = np.concatenate(([0.0], total))[starts]
    return total - before[segments]


def _reverse_segment_cummax(values: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """max(values[j] for j >= i in i's segment) for values in [0, 1] sorted by segment (N,)."""
    # Walking from the end, segments come in descending order; lowering segment s by 2 * s
    # makes each one met later larger than anything met before it, so one running maximum
    # never carries a value across a segment boundary.
    lift = -2.0 * segments
    return np.maximum.accumulate((values + lift)[::-1])[::-1] - lift


def precision_recall_curves(
    scores: np.ndarray, labels: np.ndarray, is_tp: np.ndarray, num_annotations: np.ndarray
) -> dict:
    """Per-class curves of pooled TP/FP detections, all classes at once.

    scores, labels, is_tp: (D,) of the kept detections, in image order;
    num_annotations: (K,). Returns flat arrays sorted by (label, descending score):
    labels, scores, precision, recall, envelope (max precision to the right), and per
    class: starts (K,), counts (K,), ap (K,).
    """
    num_classes = len(num_annotations)
    order = np.lexsort((-scores, labels))
    labels = labels[order]
    tp = is_tp[order].astype(np.float64)
    starts = np.searchsorted(labels, np.arange(num_classes))
    counts = np.bincount(labels, minlength=num_classes)
    tp_cum = _segment_cumsum(tp, labels, starts)
    fp_cum = _segment_cumsum(1.0 - tp, labels, starts)
    annotations = num_annotations[labels]
    recall = np.divide(tp_cum, annotations, out=np.zeros_like(tp_cum), where=annotations > 0)
    precision = tp_cum / (tp_cum + fp_cum)
    envelope = _reverse_segment_cummax(precision, labels)
    previous_recall = np.concatenate(([0.0], recall[:-1]))
    previous_recall[starts[counts > 0]] = 0.0
    ap = np.bincount(labels, weights=(recall - previous_recall) * envelope, minlength=num_classes)
    return dict(
        labels=labels,
        scores=scores[order],
        precision=precision,
        recall=recall,
        envelope=envelope,
        starts=starts,
        counts=counts,
        ap=ap,
    )


def evaluate_voc(
    detections: Sequence[dict],
    ground_truths: Sequence[dict],
    num_classes: int,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.05,
) -> dict:
    """VOC AP per class and mAP (definitions in the module docstring).

    detections: per image {boxes (D, 4) x1y1x2y2, scores (D,), labels (D,) int};
    ground_truths: per image {boxes (N, 4), labels (N,), ignore (M, 4), ignore_labels (M,)}.
    Returns {"map", "num_images", "iou_threshold", "score_threshold", "per_class":
    {class index: {"ap", "num_annotations", "num_detections", "true_positives",
    "false_positives", "precision", "recall", "precision_curve" (n,), "recall_curve" (n,),
    "envelope_curve" (n,) (the interpolated precision AP sums), "scores" (n,)}}}; curves
    follow the class's detections by descending score.
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"{len(detections)} detection records for {len(ground_truths)} images")
    dets = flatten_detections(detections)
    gt = flatten_ground_truths(ground_truths)
    _check_labels(dets.labels, 0, num_classes, "detection")
    _check_labels(gt.labels, 0, num_classes, "ground-truth")
    _check_labels(gt.ignore_labels, -1, num_classes, "ignore-region")
    num_groups = len(ground_truths) * num_classes

    keep = np.flatnonzero(dets.scores >= score_threshold)
    order = keep[np.lexsort((-dets.scores[keep], dets.images[keep] * num_classes + dets.labels[keep]))]
    boxes, scores, labels = dets.boxes[order], dets.scores[order], dets.labels[order]
    groups = dets.images[order] * num_classes + labels

    matches = greedy_match(
        boxes,
        groups,
        gt.boxes,
        gt.images * num_classes + gt.labels,
        num_groups,
        iou_threshold,
        inclusive=True,
    )
    is_tp = matches >= 0
    regions, region_labels, region_images = ignore_regions_per_class(gt, num_classes)
    region_groups = region_images * num_classes + region_labels
    ioa = max_ioa_in_group(boxes[~is_tp], groups[~is_tp], regions, region_groups, num_groups)
    counted = is_tp.copy()
    counted[~is_tp] = ioa <= IGNORE_IOA_THRESHOLD

    num_annotations = np.bincount(gt.labels, minlength=num_classes)
    curves = precision_recall_curves(scores[counted], labels[counted], is_tp[counted], num_annotations)
    true_positives = np.bincount(labels[is_tp], minlength=num_classes)

    per_class = {}
    for label in range(num_classes):
        start, count = curves["starts"][label], curves["counts"][label]
        span = slice(start, start + count)
        per_class[label] = {
            "ap": float(curves["ap"][label]),
            "num_annotations": int(num_annotations[label]),
            "num_detections": int(count),
            "true_positives": int(true_positives[label]),
            "false_positives": int(count - true_positives[label]),
            "precision": float(curves["precision"][start + count - 1]) if count else 0.0,
            "recall": float(curves["recall"][start + count - 1]) if count else 0.0,
            "precision_curve": curves["precision"][span],
            "recall_curve": curves["recall"][span],
            "envelope_curve": curves["envelope"][span],
            "scores": curves["scores"][span],
        }
    with_annotations = num_annotations > 0
    return {
        "map": float(curves["ap"][with_annotations].mean()) if with_annotations.any() else 0.0,
        "num_images": len(ground_truths),
        "iou_threshold": float(iou_threshold),
        "score_threshold": float(score_threshold),
        "per_class": per_class,
    }


def voc_at_score_threshold(voc_result: dict, score_threshold: float) -> dict:
    """A copy of ``evaluate_voc``'s result with each class's precision, recall, num_detections,
    true_positives and false_positives taken over the detections scoring >= score_threshold.

    AP and the curves stay those of every detection ``voc_result`` was computed from.
    """
    per_class = {}
    for label, result in voc_result["per_class"].items():
        # Curves run by descending score, so the detections at or above the threshold are a prefix.
        count = int(np.searchsorted(-result["scores"], -score_threshold, side="right"))
        precision = float(result["precision_curve"][count - 1]) if count else 0.0
        recall = float(result["recall_curve"][count - 1]) if count else 0.0
        true_positives = round(precision * count)
        per_class[label] = dict(
            result,
            num_detections=count,
            true_positives=true_positives,
            false_positives=count - true_positives,
            precision=precision,
            recall=recall,
        )
    return dict(voc_result, score_threshold=float(score_threshold), per_class=per_class)
