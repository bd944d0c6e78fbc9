"""The CrowdHuman protocol for one class: AP, MR^-2 and JI, as CrowdDet's official ``lib/evaluate``.

Setup, for class c over a set of images:

* every box (detections, ground truth, ignore regions) is clipped to its image the
  official way: x1 to [0, W - 1], y1 to [0, H - 1], x2 to [0, W], y2 to [0, H];
* valid ground truth: the boxes labelled c (N of them in all); ignore regions: those
  labelled c or -1; detections: those labelled c with ``score >= score_threshold``
  (0.01 by default), with no cap on the number per image;
* IoU and IoA add eps = 1e-6 to their denominators, as the official code does.

Matching (AP and MR^-2): per image, detections in descending score order; valid ground
truth comes before ignore regions. Detection d takes the unmatched valid box with the
highest IoU > 0.5 -> TP; else, if IoA(d, r) = |d ∩ r| / |d| > 0.5 for some ignore region
r, it is dropped (neither TP nor FP); else -> FP.

AP: the TP/FP detections of all images sorted by descending score (ties in image order);
after the k-th, recall_k = TP_k / N and precision_k = TP_k / k; trapezoids between
consecutive points, from the first detection on (no point at recall 0)::

    AP = sum_{k=2..n} (recall_k - recall_{k-1}) * (precision_k + precision_{k-1}) / 2

MR^-2 (log-average miss rate): fppi_k = FP_k / #images, mr_k = 1 - recall_k. For each
reference f in F = {0.0100, 0.0178, 0.0316, 0.0562, 0.1000, 0.1778, 0.3162, 0.5623, 1.0}
(10^(-2 + i/4) rounded to four digits, the values the official code uses), mr(f) is mr_k
at the first k with fppi_k >= f, or at the last k when the FPPI never reaches f::

    MR^-2 = exp(mean_{f in F} log mr(f))      (a geometric mean: 0 as soon as one mr(f) is 0)

JI (Jaccard index): for each score threshold t = 0.1 * i, i = 0..9, per image, with D_t
the detections with score > t (strictly, as official)::

    k = number of pairs in a maximum-weight matching of D_t to the valid ground truth,
        edges with IoU > 0.5 weighted by IoU (``scipy.optimize.linear_sum_assignment``
        on the IoU matrix with entries <= 0.5 set to 0, zero-weight pairs dropped)
    n = |D_t| - #(unmatched d in D_t with max IoA(d, ignore) > 0.5)
    m = N_image - #(unmatched valid g with max IoA(g, ignore) > 0.5)
    JI_image(t) = k / (m + n - k)     (0 when m = n = 0)
    JI(t) = sum_images JI_image(t) / #(images with m > 0 or n > 0)

and JI = max_t JI(t), reported with its threshold.

Where we differ from the official code, on purpose: its JI denominator carries an
extra +1e-6 (so perfect detections give 0.999999...), ours is exact; with no valid
ground truth it crashes, we take recall 0 (AP 0, MR^-2 1); with no detections its
MR^-2 is NaN, ours is 1 (every miss rate is 1).
"""

from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from retinanet.evaluation.matching import (
    IGNORE_IOA_THRESHOLD,
    GroupBlock,
    block_iou,
    clip_boxes_official,
    flatten_detections,
    flatten_ground_truths,
    greedy_match_block,
    iter_group_blocks,
    max_ioa_in_group,
)

MATCH_IOU_THRESHOLD = 0.5
OVERLAP_EPS = 1e-6
FPPI_REFERENCES = np.array([0.0100, 0.0178, 0.0316, 0.0562, 0.1000, 0.1778, 0.3162, 0.5623, 1.0000])
# 0.1 * i rather than round(0.1 * i, 1): the official thresholds are these floats (0.30000000000000004).
JI_SCORE_THRESHOLDS = np.arange(10) * 0.1


def average_precision_and_miss_rate(
    scores: np.ndarray, is_tp: np.ndarray, num_annotations: int, num_images: int
) -> dict:
    """AP and MR^-2 from the pooled TP/FP detections: scores (n,), is_tp (n,) bool, in image order.

    Returns {"ap", "mr", "scores", "recall_curve", "precision_curve", "fppi_curve",
    "miss_rate_curve"}, curves (n,) by descending score.
    """
    order = np.argsort(-scores, kind="stable")
    tp = is_tp[order]
    tp_cum = np.cumsum(tp, dtype=np.float64)
    fp_cum = np.cumsum(~tp, dtype=np.float64)
    recall = tp_cum / num_annotations if num_annotations else np.zeros_like(tp_cum)
    precision = tp_cum / (tp_cum + fp_cum)
    fppi = fp_cum / num_images
    miss_rate = 1.0 - recall
    ap = float(np.sum(np.diff(recall) * (precision[1:] + precision[:-1]) / 2.0))
    if len(tp) == 0:
        mr = 1.0
    else:
        # fppi never decreases, so the first index with fppi >= f is a left search.
        at = np.minimum(np.searchsorted(fppi, FPPI_REFERENCES, side="left"), len(fppi) - 1)
        rates = miss_rate[at]
        mr = 0.0 if (rates == 0).any() else float(np.exp(np.mean(np.log(rates))))
    return {
        "ap": ap,
        "mr": mr,
        "scores": scores[order],
        "recall_curve": recall,
        "precision_curve": precision,
        "fppi_curve": fppi,
        "miss_rate_curve": miss_rate,
    }


def _count_per_image(mask: np.ndarray, images: np.ndarray, num_images: int) -> np.ndarray:
    """mask (T, N) bool over items of images (N,) -> (T, num_images) counts of True."""
    thresholds, items = np.nonzero(mask)
    counts = np.bincount(thresholds * num_images + images[items], minlength=mask.shape[0] * num_images)
    return counts.reshape(mask.shape[0], num_images)


def _runs_to_mask(runs: "list[tuple[np.ndarray, int, int]]", size: int) -> np.ndarray:
    """Runs (ids, first threshold, end threshold) -> (T, size) bool, True where an id is matched."""
    mask = np.zeros((len(JI_SCORE_THRESHOLDS), size), dtype=bool)
    if not runs:
        return mask
    ids = np.concatenate([run[0] for run in runs])
    counts = [len(run[0]) for run in runs]
    first = np.repeat([run[1] for run in runs], counts)
    spans = np.repeat([run[2] - run[1] for run in runs], counts)  # thresholds per id
    # Expand each id over its thresholds: offsets 0..span-1 after each id's first threshold.
    offsets = np.arange(spans.sum()) - np.repeat(np.cumsum(spans) - spans, spans)
    mask[np.repeat(first, spans) + offsets, np.repeat(ids, spans)] = True
    return mask


def _max_weight_runs(
    block: GroupBlock, ious: np.ndarray, det_levels: np.ndarray, det_runs: list, gt_runs: list
) -> None:
    """Append the JI matchings of a block's images to det_runs / gt_runs as (ids, first, end threshold).

    ious: (B, R, C), rows in descending score order. Only detections and ground truths
    with an edge (IoU > 0.5) enter the assignment. Each threshold's detection set is a
    prefix of the rows; consecutive thresholds whose prefixes hold the same detections
    with an edge share one assignment.
    """
    num_thresholds = len(JI_SCORE_THRESHOLDS)
    weights = np.where(ious > MATCH_IOU_THRESHOLD, ious, 0.0)  # padding (-inf) becomes 0 too
    has_edge = weights.any(axis=2)  # (B, R)
    for slot in np.flatnonzero(has_edge.any(axis=1)):
        edge_rows = np.flatnonzero(has_edge[slot])
        image_weights = weights[slot, edge_rows]
        edge_cols = np.flatnonzero(image_weights.any(axis=0))
        image_weights = image_weights[:, edge_cols]  # (r, c)
        det_ids = block.rows[slot, edge_rows]
        gt_ids = block.cols[slot, edge_cols]
        # Prefix length per threshold; it never grows with the threshold, so equal lengths are runs.
        lengths = (det_levels[det_ids][None, :] > np.arange(num_thresholds)[:, None]).sum(axis=1).tolist()
        start = 0
        while start < num_thresholds and lengths[start] > 0:
            end = start + 1
            while end < num_thresholds and lengths[end] == lengths[start]:
                end += 1
            rows, cols = linear_sum_assignment(image_weights[: lengths[start]], maximize=True)
            paired = image_weights[rows, cols] > 0
            det_runs.append((det_ids[rows[paired]], start, end))
            gt_runs.append((gt_ids[cols[paired]], start, end))
            start = end


def match_all(
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    det_images: np.ndarray,
    gt_boxes: np.ndarray,
    gt_images: np.ndarray,
    num_images: int,
) -> "tuple[np.ndarray, np.ndarray, np.ndarray]":
    """Both matchings of the protocol from one IoU computation per block.

    det_*: (D,) clipped boxes (D, 4) sorted by descending score inside each image; gt_*: (G,).
    Returns greedy matches (D,) (ground-truth index or -1, for AP and MR^-2), and whether
    each detection (T, D) and ground truth (T, G) is in the JI matching at each threshold.
    """
    matches = np.full(len(det_boxes), -1, dtype=np.int64)
    # Threshold i keeps a detection when score > t_i, i.e. when i < its level.
    det_levels = np.searchsorted(JI_SCORE_THRESHOLDS, det_scores, side="left")  # (D,)
    det_runs, gt_runs = [], []
    for block in iter_group_blocks(det_images, gt_images, num_images):
        ious = block_iou(block, det_boxes, gt_boxes, OVERLAP_EPS)  # (B, R, C), -inf on padding
        rows, cols = greedy_match_block(block, ious, MATCH_IOU_THRESHOLD, inclusive=False)
        matches[rows] = cols
        _max_weight_runs(block, ious, det_levels, det_runs, gt_runs)
    return matches, _runs_to_mask(det_runs, len(det_boxes)), _runs_to_mask(gt_runs, len(gt_boxes))


def jaccard_index(
    det_matched: np.ndarray,
    gt_matched: np.ndarray,
    det_scores: np.ndarray,
    det_images: np.ndarray,
    det_ignored: np.ndarray,
    gt_images: np.ndarray,
    gt_ignored: np.ndarray,
    num_images: int,
) -> np.ndarray:
    """JI(t) for every t in JI_SCORE_THRESHOLDS -> (T,).

    det_matched (T, D) / gt_matched (T, G): membership of the maximum-weight matching;
    det_scores, det_images, det_ignored: (D,); gt_images, gt_ignored: (G,); *_ignored says
    whether the box lies more than half inside an ignore region.
    """
    in_set = det_scores[None, :] > JI_SCORE_THRESHOLDS[:, None]  # (T, D)
    k = _count_per_image(det_matched, det_images, num_images)
    n = _count_per_image(in_set, det_images, num_images)
    n -= _count_per_image(in_set & ~det_matched & det_ignored[None, :], det_images, num_images)
    m = np.bincount(gt_images, minlength=num_images)[None, :]
    m = m - _count_per_image(~gt_matched & gt_ignored[None, :], gt_images, num_images)
    union = (m + n - k).astype(np.float64)
    per_image = np.divide(k, union, out=np.zeros_like(union), where=union > 0)
    counted = ((m > 0) | (n > 0)).sum(axis=1)
    return np.divide(per_image.sum(axis=1), counted, out=np.zeros(len(counted)), where=counted > 0)


def evaluate_crowdhuman(
    detections: Sequence[dict],
    ground_truths: Sequence[dict],
    class_index: int,
    image_sizes: Sequence["tuple[int, int]"],
    score_threshold: float = 0.01,
) -> dict:
    """AP, MR^-2 and JI of class ``class_index`` (definitions in the module docstring).

    detections: per image {boxes (D, 4) x1y1x2y2, scores (D,), labels (D,)};
    ground_truths: per image {boxes (N, 4), labels (N,), ignore (M, 4), ignore_labels (M,)};
    image_sizes: per image (H, W). Returns {"ap", "mr" (a fraction), "ji",
    "ji_score_threshold", "ji_score_thresholds" (10,), "ji_per_threshold" (10,),
    "num_annotations", "num_images", "num_detections" (TP + FP), "score_threshold", and
    the curves of ``average_precision_and_miss_rate``}.
    """
    num_images = len(ground_truths)
    if len(detections) != num_images or len(image_sizes) != num_images:
        raise ValueError(
            f"{len(detections)} detection records and {len(image_sizes)} image sizes for {num_images} images"
        )
    sizes = np.asarray(image_sizes, dtype=np.float64).reshape(-1, 2) if num_images else np.zeros((0, 2))
    if sizes.shape != (num_images, 2):
        raise ValueError(f"image_sizes must hold one (H, W) per image, got shape {np.shape(image_sizes)}")
    if (sizes <= 0).any():
        raise ValueError(f"image size {sizes[(sizes <= 0).any(axis=1)][0]} is not positive")
    heights, widths = sizes[:, 0], sizes[:, 1]
    dets = flatten_detections(detections)
    gt = flatten_ground_truths(ground_truths)

    keep = (dets.labels == class_index) & (dets.scores >= score_threshold)
    order = np.lexsort((-dets.scores[keep], dets.images[keep]))
    det_images = dets.images[keep][order]
    det_scores = dets.scores[keep][order]
    det_boxes = clip_boxes_official(dets.boxes[keep][order], heights[det_images], widths[det_images])
    valid = gt.labels == class_index
    gt_images = gt.images[valid]
    gt_boxes = clip_boxes_official(gt.boxes[valid], heights[gt_images], widths[gt_images])
    ignore = (gt.ignore_labels == class_index) | (gt.ignore_labels == -1)
    ignore_images = gt.ignore_images[ignore]
    ignore_boxes = clip_boxes_official(gt.ignore[ignore], heights[ignore_images], widths[ignore_images])

    matches, det_matched, gt_matched = match_all(
        det_boxes, det_scores, det_images, gt_boxes, gt_images, num_images
    )
    is_tp = matches >= 0
    det_ignored = (
        max_ioa_in_group(det_boxes, det_images, ignore_boxes, ignore_images, num_images, OVERLAP_EPS)
        > IGNORE_IOA_THRESHOLD
    )
    gt_ignored = (
        max_ioa_in_group(gt_boxes, gt_images, ignore_boxes, ignore_images, num_images, OVERLAP_EPS)
        > IGNORE_IOA_THRESHOLD
    )
    counted = is_tp | ~det_ignored
    result = average_precision_and_miss_rate(det_scores[counted], is_tp[counted], len(gt_boxes), num_images)

    ji = jaccard_index(
        det_matched, gt_matched, det_scores, det_images, det_ignored, gt_images, gt_ignored, num_images
    )
    best = int(np.argmax(ji))
    result.update(
        ji=float(ji[best]),
        ji_score_threshold=float(JI_SCORE_THRESHOLDS[best]),
        ji_score_thresholds=JI_SCORE_THRESHOLDS.copy(),
        ji_per_threshold=ji,
        num_annotations=int(len(gt_boxes)),
        num_images=num_images,
        num_detections=int(counted.sum()),
        score_threshold=float(score_threshold),
    )
    return result
