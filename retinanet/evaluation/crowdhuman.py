"""The CrowdHuman protocol for one class: AP, MR^-2 and JI as CrowdDet's official ``lib/evaluate``.

Each part mirrors one official function (files of CrowdDet's ``lib/evaluate``):

=============================================  ===========================================
official                                       here
=============================================  ===========================================
``image.py`` ``Image.load``: height, width    ``record_image_size``
``image.py`` ``Image.load_gt_boxes``           ``evaluate_crowdhuman``: valid ground truth
                                               (tag 1) and ignored ground truth (tag -1)
``image.py`` ``Image.clip_all_boader``,        ``clip_boundary``
``misc_utils.clip_boundary``
``image.py`` ``Image.box_overlap_opr``,        ``box_overlap_opr``
``JI_tools.compute_iou_matrix`` /
``compute_ioa_matrix``
``image.py`` ``Image.compare_caltech``         ``compare_caltech``
``database.py`` ``Database.compare``           ``evaluate_crowdhuman``: one stable sort of
                                               every image's results by score
``database.py`` ``Database.eval_AP``           ``eval_ap``
``database.py`` ``Database.eval_MR``           ``eval_mr``
``compute_JI.compute_JI_with_ignore``,         ``ji_counts`` (k, and the matched boxes that
``JI_tools.compute_matching`` /                the ignore discounts leave out)
``get_ignores``
``compute_JI.gather``, ``evaluation_all``      ``gather_ji``, best over the thresholds
=============================================  ===========================================

The conventions, as the official code has them:

* Clipping (every box, detections and both kinds of ground truth, nothing dropped after):
  x1 to [0, W - 1], y1 to [0, H - 1], x2 to [0, W], y2 to [0, H]. A box lying right of the
  image thus keeps a one-pixel sliver.
* Overlaps add eps = 1e-6 to their denominators: IoU = |d ∩ g| / (|d| + |g| - |d ∩ g| + eps),
  IoA = |d ∩ r| / (|d| + eps). The official IoA for JI clamps the box area at 0 and the one
  for AP does not; clipped boxes with x2 >= x1, y2 >= y1 (all our readers accept) have the
  same area either way, so one IoA serves both.
* Matching for AP and MR^-2 (``compare_caltech``): per image, detections by descending score
  (equal scores in the order given), ground truth with the valid boxes first in their order,
  then the ignored ones. Each detection takes the unmatched valid box of highest IoU > 0.5
  (ties: the first); failing that it is dropped if its IoA with some ignored box is > 0.5;
  otherwise it is a false positive. Ignored boxes absorb any number of detections.
* AP (``eval_ap``): the TP/FP detections of all images sorted by descending score, ties in
  image order then in the image's order (Python's stable sort over the images in
  ground-truth file order). After the k-th: recall_k = TP_k / N (N valid boxes in all),
  precision_k = TP_k / k. Trapezoids from the first detection on, no point at recall 0::

      AP = sum_{k=2..n} (recall_k - recall_{k-1}) * (precision_{k-1} + precision_k) / 2

* MR^-2 (``eval_mr``): fppi_k = FP_k / #images, mr_k = 1 - recall_k. For each reference f of
  F = {0.0100, 0.0178, 0.0316, 0.0562, 0.1000, 0.1778, 0.3162, 0.5623, 1.0} (the official
  four-digit values), mr(f) = mr_k at the first k with fppi_k >= f, at the last k when no
  fppi reaches f; MR^-2 = exp(mean_f log mr(f)), 0 as soon as one mr(f) is 0.
* JI (``ji_counts``, ``gather_ji``): for t = 0.1 * i, i = 0..9 (the floats 1e-1 * i, so
  0.30000000000000004), per image, D_t = the detections with score > t::

      k = pairs of a maximum-weight matching of D_t to the valid boxes, on the edges with
          IoU > 0.5, weighted by IoU
      n = |D_t| - #(unmatched d in D_t with max IoA(d, ignored boxes) > 0.5)
      m = #valid - #(unmatched valid g with max IoA(g, ignored boxes) > 0.5)
      JI_image(t) = k / (m + n - k + eps)
      JI(t) = sum over all images of JI_image(t) / #(images with m != 0 or n != 0)

  and JI = max_t JI(t), reported with its threshold. The official matching is Edmonds'
  blossom algorithm (``maxWeightMatching``, maxcardinality off); a graph this bipartite
  gets the same maximum-weight matching from ``scipy.optimize.linear_sum_assignment`` on
  the IoU matrix with the non-edges at 0 (and those zero pairs dropped). When several
  matchings share the maximum weight exactly (ties, e.g. duplicated boxes) the two may
  pick different ones; duplicated boxes have the same overlaps, so k, m and n agree.

Body-head pairs (``evaluate_crowdhuman_pairs``): one detection per person carrying a body and a
head box, scored as the official ``Image.compare_caltech_union`` matches them (eval mode 2):

* ground truth (``pair_ground_truth``, mode 2 of ``Image.load_gt_boxes``): every gtbox gives a
  body (``fbox``) and a head (``hbox``); the pair is valid when the tag is ``person`` and neither
  ``extra.ignore`` nor ``head_attr.ignore`` is set, ignored otherwise (masks, ignored people,
  people with an ignored head); both boxes of detections and ground truth are clipped;
* matching (``compare_caltech_union``): as ``compare_caltech``, except that a valid person is a
  candidate only when the body IoU and the head IoU are both above the running best, which starts
  at 0.5 and becomes the body IoU of the person taken so far (so a later person must also beat it
  with its head); a detection matching no valid person is dropped when its body's IoA with an
  ignored entry's body is > 0.5;
* AP and MR^-2 as above, over the valid pairs.

Where we go beyond the official code, which fails on these inputs: an image with no ground
truth at all, or none valid in the whole set, is allowed (recall 0, so AP 0 and MR^-2 1);
no detection at all gives MR^-2 1 (the official code's mean of nothing is NaN); JI with no
image counted is 0.
"""

from typing import Optional, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from retinanet.evaluation.matching import flatten_detections, flatten_ground_truths, xywh_to_xyxy

MATCH_IOU_THRESHOLD = 0.5  # official ``thres`` of compare_caltech and ``bm_thresh`` of JI
IGNORE_IOA_THRESHOLD = 0.5  # the same 0.5, applied to IoA with ignored boxes
OVERLAP_EPS = 1e-6
FPPI_REFERENCES = np.array([0.0100, 0.0178, 0.03160, 0.0562, 0.1000, 0.1778, 0.3162, 0.5623, 1.000])
# 1e-1 * i rather than round(0.1 * i, 1): the official thresholds are these floats.
JI_SCORE_THRESHOLDS = 1e-1 * np.arange(10)


def record_image_size(record: dict) -> "Optional[tuple[int, int]]":
    """(H, W) from an odgt record's ``height`` and ``width`` (``Image.load``), None when it has neither.

    A ValueError when they are not two positive integers.
    """
    if "height" not in record and "width" not in record:
        return None
    height, width = record.get("height"), record.get("width")
    for name, value in (("height", height), ("width", width)):
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise ValueError(f'"{name}" must be a positive integer, got {value!r}')
    return height, width


def clip_boundary(boxes: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """boxes (N, 4) x1y1x2y2, heights / widths (N,) of each box's image -> clipped copy (N, 4) float64."""
    clipped = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    clipped[:, 0] = np.minimum(np.maximum(clipped[:, 0], 0), widths - 1)
    clipped[:, 1] = np.minimum(np.maximum(clipped[:, 1], 0), heights - 1)
    clipped[:, 2] = np.maximum(np.minimum(clipped[:, 2], widths), 0)
    clipped[:, 3] = np.maximum(np.minimum(clipped[:, 3], heights), 0)
    return clipped


def box_overlap_opr(dets: np.ndarray, gts: np.ndarray, if_iou: bool) -> np.ndarray:
    """IoU (if_iou) or IoA of dets (N, 4) with gts (K, 4) -> (N, K); the official formulas and eps."""
    iw = np.minimum(dets[:, None, 2], gts[None, :, 2]) - np.maximum(dets[:, None, 0], gts[None, :, 0])
    ih = np.minimum(dets[:, None, 3], gts[None, :, 3]) - np.maximum(dets[:, None, 1], gts[None, :, 1])
    inter = np.maximum(0, iw) * np.maximum(0, ih)
    det_area = ((dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1]))[:, None]
    if not if_iou:
        return inter / (det_area + OVERLAP_EPS)
    gt_area = ((gts[:, 2] - gts[:, 0]) * (gts[:, 3] - gts[:, 1]))[None, :]
    return inter / (det_area + gt_area - inter + OVERLAP_EPS)


def max_ioa(boxes: np.ndarray, ignored: np.ndarray) -> np.ndarray:
    """boxes (N, 4), ignored (M, 4) -> (N,) largest IoA of each box with the ignored boxes, 0 if none."""
    if len(ignored) == 0 or len(boxes) == 0:
        return np.zeros(len(boxes))
    return box_overlap_opr(boxes, ignored, if_iou=False).max(axis=1)


def compare_caltech(ious: np.ndarray, in_ignored: np.ndarray) -> "tuple[np.ndarray, np.ndarray]":
    """One image's greedy matching for AP and MR^-2.

    ious: (D, G) IoU of the detections (descending score) with the valid ground truth (in
    order); in_ignored: (D,) whether max IoA with the ignored ground truth is > 0.5.
    Returns (matched gt index (D,) or -1, dropped (D,) bool: absorbed by an ignored box).
    """
    det_index, gt_index = np.nonzero(ious > MATCH_IOU_THRESHOLD)
    # Each detection's candidates from the highest IoU down, the first box on ties: the first
    # one still unmatched is what the official scan over the valid boxes settles on.
    order = np.lexsort((gt_index, -ious[det_index, gt_index], det_index))
    matched = [-1] * len(ious)
    taken = [False] * ious.shape[1]
    # Sequential by nature: a box taken by a detection is gone for every later one.
    for d, g in zip(det_index[order].tolist(), gt_index[order].tolist()):
        if matched[d] < 0 and not taken[g]:
            matched[d] = g
            taken[g] = True
    matched = np.array(matched, dtype=np.int64)
    return matched, (matched < 0) & in_ignored


def compare_caltech_union(
    body_ious: np.ndarray, head_ious: np.ndarray, in_ignored: np.ndarray
) -> "tuple[np.ndarray, np.ndarray]":
    """One image's greedy matching of body-head pairs (``Image.compare_caltech_union``).

    body_ious, head_ious: (D, G) IoU of the detections' bodies / heads (descending score) with the
    valid people's (in order); in_ignored: (D,) whether the body's max IoA with the ignored entries'
    bodies is > 0.5. Returns (matched person index (D,) or -1, dropped (D,) bool).
    """
    passing = (body_ious > MATCH_IOU_THRESHOLD) & (head_ious > MATCH_IOU_THRESHOLD)
    matched = np.full(len(body_ious), -1, dtype=np.int64)
    taken = np.zeros(body_ious.shape[1], dtype=bool)
    for d in np.flatnonzero(passing.any(axis=1)).tolist():
        best, best_iou = -1, MATCH_IOU_THRESHOLD
        for g in np.flatnonzero(passing[d] & ~taken).tolist():
            # The official scan holds the head IoU too against the best body IoU so far.
            if body_ious[d, g] > best_iou and head_ious[d, g] > best_iou:
                best, best_iou = g, body_ious[d, g]
        if best >= 0:
            matched[d] = best
            taken[best] = True
    return matched, (matched < 0) & in_ignored


def ji_counts(
    ious: np.ndarray, prefix_lengths: np.ndarray, det_in_ignored: np.ndarray, gt_in_ignored: np.ndarray
) -> np.ndarray:
    """One image's maximum-weight matchings for JI, one per score threshold.

    ious: (D, G), detections by descending score, so that each D_t is a prefix of them;
    prefix_lengths: (T,) |D_t|; det_in_ignored (D,) / gt_in_ignored (G,): max IoA with the
    ignored boxes > 0.5. Returns (T, 3) int: k, and how many matched detections and matched
    valid boxes lie in ignored boxes (the discounts of n and m count unmatched ones only).
    """
    counts = np.zeros((len(prefix_lengths), 3), dtype=np.int64)
    weights = np.where(ious > MATCH_IOU_THRESHOLD, ious, 0.0)
    rows = np.flatnonzero(weights.any(axis=1))  # only detections with an edge can be matched
    if len(rows) == 0:
        return counts
    weights = weights[rows]
    cols = np.flatnonzero(weights.any(axis=0))
    weights = weights[:, cols]
    det_ignored, gt_ignored = det_in_ignored[rows], gt_in_ignored[cols]
    # Thresholds whose D_t hold the same detections with an edge share one matching.
    rows_in = np.searchsorted(rows, prefix_lengths, side="left").tolist()
    for size in set(rows_in) - {0}:
        pair_rows, pair_cols = linear_sum_assignment(weights[:size], maximize=True)
        edge = weights[pair_rows, pair_cols] > 0
        pair_rows, pair_cols = pair_rows[edge], pair_cols[edge]
        counts[[t for t, s in enumerate(rows_in) if s == size]] = (
            len(pair_rows),
            np.count_nonzero(det_ignored[pair_rows]),
            np.count_nonzero(gt_ignored[pair_cols]),
        )
    return counts


def eval_ap(is_tp: np.ndarray, num_valid: int) -> "tuple[float, np.ndarray, np.ndarray]":
    """is_tp (n,) of the pooled TP/FP detections by descending score -> (AP, recall (n,), precision (n,))."""
    tp = np.cumsum(is_tp, dtype=np.float64)
    fp = np.cumsum(~is_tp, dtype=np.float64)
    recall = tp / num_valid if num_valid else np.zeros_like(tp)
    precision = tp / (tp + fp)
    areas = np.diff(recall) * ((precision[:-1] + precision[1:]) / 2)
    # cumsum adds left to right, as the official loop does (np.sum would pair terms up).
    return (float(np.cumsum(areas)[-1]) if len(areas) else 0.0), recall, precision


def eval_mr(is_tp: np.ndarray, recall: np.ndarray, num_images: int) -> "tuple[float, np.ndarray]":
    """is_tp, recall (n,) as ``eval_ap`` -> (MR^-2, fppi (n,))."""
    fppi = np.cumsum(~is_tp, dtype=np.float64) / num_images
    if len(fppi) == 0:
        return 1.0, fppi
    # fppi never decreases, so "the first k with fppi_k >= f" is a left search.
    at = np.minimum(np.searchsorted(fppi, FPPI_REFERENCES, side="left"), len(fppi) - 1)
    with np.errstate(divide="ignore"):  # log(0) = -inf, and exp(-inf) = 0: a zero miss rate wins
        return float(np.exp(np.log(1.0 - recall[at]).mean())), fppi


def gather_ji(k: np.ndarray, m: np.ndarray, n: np.ndarray) -> np.ndarray:
    """k, m, n (T, I) per threshold and image -> JI(t) (T,)."""
    ratio = k / (m + n - k + OVERLAP_EPS)
    counted = ((n != 0) | (m != 0)).sum(axis=1)
    return np.divide(ratio.sum(axis=1), counted, out=np.zeros(len(counted)), where=counted > 0)


def _image_bounds(images: np.ndarray, num_images: int) -> np.ndarray:
    """images (N,) sorted -> (num_images + 1,) start of each image's run."""
    return np.searchsorted(images, np.arange(num_images + 1))


def _count_per_image(mask: np.ndarray, images: np.ndarray, num_images: int) -> np.ndarray:
    """mask (T, N) bool over boxes of images (N,) -> (T, num_images) counts of True."""
    return np.stack([np.bincount(images[row], minlength=num_images) for row in mask])


def evaluate_crowdhuman(
    detections: Sequence[dict],
    ground_truths: Sequence[dict],
    class_index: int,
    image_sizes: Sequence["tuple[int, int]"],
    score_threshold: Optional[float] = None,
) -> dict:
    """AP, MR^-2 and JI of class ``class_index`` (definitions in the module docstring).

    detections: per image {boxes (D, 4) x1y1x2y2, scores (D,), labels (D,)};
    ground_truths: per image {boxes (N, 4), labels (N,), ignore (M, 4), ignore_labels (M,)}:
    the valid boxes of the class are its tag 1 ground truth, its ignore regions (and those
    labelled -1) the tag -1 ones; image_sizes: per image (H, W), for the clipping.
    score_threshold: keep detections scoring >= it; None (the official protocol) keeps all.
    Returns {"ap", "mr" (a fraction), "ji", "ji_score_threshold", "ji_score_thresholds" (10,),
    "ji_per_threshold" (10,), "num_annotations", "num_images", "num_detections" (TP + FP),
    "score_threshold", and the curves by descending score: "scores", "recall_curve",
    "precision_curve", "fppi_curve", "miss_rate_curve" (each (num_detections,))}.
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

    keep = dets.labels == class_index
    if score_threshold is not None:
        keep &= dets.scores >= score_threshold
    keep = np.flatnonzero(keep)
    # Per image by descending score, equal scores in the given order (lexsort is stable).
    keep = keep[np.lexsort((-dets.scores[keep], dets.images[keep]))]
    det_images, det_scores = dets.images[keep], dets.scores[keep]
    det_boxes = clip_boundary(dets.boxes[keep], heights[det_images], widths[det_images])
    valid = gt.labels == class_index
    gt_images = gt.images[valid]
    gt_boxes = clip_boundary(gt.boxes[valid], heights[gt_images], widths[gt_images])
    ignored = (gt.ignore_labels == class_index) | (gt.ignore_labels == -1)
    ignored_images = gt.ignore_images[ignored]
    ignored_boxes = clip_boundary(gt.ignore[ignored], heights[ignored_images], widths[ignored_images])

    # D_t per image: detections scoring > t, a prefix of each image's run.
    det_in_set = det_scores[None, :] > JI_SCORE_THRESHOLDS[:, None]  # (T, D)
    prefix_lengths = _count_per_image(det_in_set, det_images, num_images)  # (T, I)
    is_tp = np.zeros(len(det_boxes), dtype=bool)
    dropped = np.zeros(len(det_boxes), dtype=bool)
    det_in_ignored = np.zeros(len(det_boxes), dtype=bool)
    gt_in_ignored = np.zeros(len(gt_boxes), dtype=bool)
    matched = np.zeros((len(JI_SCORE_THRESHOLDS), num_images, 3), dtype=np.int64)  # ji_counts per image
    det_bounds = _image_bounds(det_images, num_images)
    gt_bounds = _image_bounds(gt_images, num_images)
    ignored_bounds = _image_bounds(ignored_images, num_images)
    for image in np.flatnonzero(
        (np.diff(det_bounds) > 0) | ((np.diff(gt_bounds) > 0) & (np.diff(ignored_bounds) > 0))
    ).tolist():
        d = slice(det_bounds[image], det_bounds[image + 1])
        g = slice(gt_bounds[image], gt_bounds[image + 1])
        regions = ignored_boxes[ignored_bounds[image] : ignored_bounds[image + 1]]
        det_in_ignored[d] = max_ioa(det_boxes[d], regions) > IGNORE_IOA_THRESHOLD
        gt_in_ignored[g] = max_ioa(gt_boxes[g], regions) > IGNORE_IOA_THRESHOLD
        if d.stop == d.start:
            continue
        ious = box_overlap_opr(det_boxes[d], gt_boxes[g], if_iou=True)
        image_matches, dropped[d] = compare_caltech(ious, det_in_ignored[d])
        is_tp[d] = image_matches >= 0
        matched[:, image] = ji_counts(ious, prefix_lengths[:, image], det_in_ignored[d], gt_in_ignored[g])

    # Database.compare: every image's TP/FP detections, one stable sort by descending score.
    counted = np.flatnonzero(~dropped)
    order = counted[np.argsort(-det_scores[counted], kind="stable")]
    ap, recall, precision = eval_ap(is_tp[order], len(gt_boxes))
    mr, fppi = eval_mr(is_tp[order], recall, num_images)

    k = matched[:, :, 0]
    n = prefix_lengths - (_count_per_image(det_in_set & det_in_ignored, det_images, num_images) - matched[:, :, 1])
    m = np.bincount(gt_images, minlength=num_images) - (
        np.bincount(gt_images[gt_in_ignored], minlength=num_images) - matched[:, :, 2]
    )
    ji = gather_ji(k, m, n)
    best = int(np.argmax(ji))
    return {
        "ap": ap,
        "mr": mr,
        "ji": float(ji[best]),
        "ji_score_threshold": float(JI_SCORE_THRESHOLDS[best]),
        "ji_score_thresholds": JI_SCORE_THRESHOLDS.copy(),
        "ji_per_threshold": ji,
        "num_annotations": int(len(gt_boxes)),
        "num_images": num_images,
        "num_detections": int(len(order)),
        "score_threshold": score_threshold,
        "scores": det_scores[order],
        "recall_curve": recall,
        "precision_curve": precision,
        "fppi_curve": fppi,
        "miss_rate_curve": 1.0 - recall,
    }


def pair_ground_truth(record: dict) -> dict:
    """An odgt record's people as body-head pairs (mode 2 of ``Image.load_gt_boxes``).

    Returns {"bodies": (N, 4) x1y1x2y2 from ``fbox``, "heads": (N, 4) from ``hbox``, "valid": (N,)
    bool}, every gtbox in record order.
    """
    bodies, heads, valid = [], [], []
    for gtbox in record["gtboxes"]:
        bodies.append(gtbox["fbox"])
        heads.append(gtbox["hbox"])
        ignored = bool((gtbox.get("extra") or {}).get("ignore", 0)) or bool(
            (gtbox.get("head_attr") or {}).get("ignore", 0))
        valid.append(gtbox.get("tag") == "person" and not ignored)
    return {"bodies": xywh_to_xyxy(bodies), "heads": xywh_to_xyxy(heads), "valid": np.array(valid, dtype=bool)}


def _clip_to_image(boxes: np.ndarray, size: "tuple[int, int]") -> np.ndarray:
    """boxes (N, 4) x1y1x2y2 of one (H, W) image -> clipped copy, the official way."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return clip_boundary(boxes, np.full(len(boxes), size[0]), np.full(len(boxes), size[1]))


def evaluate_crowdhuman_pairs(
    detections: Sequence[dict], people: Sequence[dict], image_sizes: Sequence["tuple[int, int]"]
) -> dict:
    """AP and MR^-2 of body-head pair detections (definitions in the module docstring).

    detections: per image {"bodies": (D, 4) x1y1x2y2, "heads": (D, 4), "scores": (D,)}; people: per
    image ``pair_ground_truth``'s {"bodies", "heads", "valid"}; image_sizes: per image (H, W).
    Returns {"ap", "mr", "num_annotations" (valid pairs), "num_images", "num_detections" (TP + FP),
    and the curves by descending score: "scores", "recall_curve", "precision_curve", "fppi_curve"}.
    """
    num_images = len(people)
    if len(detections) != num_images or len(image_sizes) != num_images:
        raise ValueError(f"{len(detections)} detection records and {len(image_sizes)} image sizes for "
                         f"{num_images} images")
    scores, is_tp, num_valid = [], [], 0
    for image_dets, image_people, size in zip(detections, people, image_sizes):
        det_scores = np.asarray(image_dets["scores"], dtype=np.float64)
        order = np.argsort(-det_scores, kind="stable")
        det_scores = det_scores[order]
        det_bodies = _clip_to_image(np.asarray(image_dets["bodies"]).reshape(-1, 4)[order], size)
        det_heads = _clip_to_image(np.asarray(image_dets["heads"]).reshape(-1, 4)[order], size)
        valid = np.asarray(image_people["valid"], dtype=bool)
        bodies, heads = _clip_to_image(image_people["bodies"], size), _clip_to_image(image_people["heads"], size)
        num_valid += int(valid.sum())
        matched, dropped = compare_caltech_union(
            box_overlap_opr(det_bodies, bodies[valid], if_iou=True),
            box_overlap_opr(det_heads, heads[valid], if_iou=True),
            max_ioa(det_bodies, bodies[~valid]) > IGNORE_IOA_THRESHOLD,
        )
        scores.append(det_scores[~dropped])
        is_tp.append(matched[~dropped] >= 0)
    scores = np.concatenate(scores) if scores else np.zeros(0)
    is_tp = np.concatenate(is_tp) if is_tp else np.zeros(0, dtype=bool)
    # Database.compare: every image's TP/FP detections, one stable sort by descending score.
    order = np.argsort(-scores, kind="stable")
    ap, recall, precision = eval_ap(is_tp[order], num_valid)
    mr, fppi = eval_mr(is_tp[order], recall, num_images)
    return {"ap": ap, "mr": mr, "num_annotations": num_valid, "num_images": num_images,
            "num_detections": int(len(order)), "scores": scores[order], "recall_curve": recall,
            "precision_curve": precision, "fppi_curve": fppi}
