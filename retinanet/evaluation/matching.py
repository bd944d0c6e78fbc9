"""Vectorised overlaps and greedy matching for the VOC evaluation, and the flat-array data contract.

Detections and ground truth of a whole data set are handled as flat arrays plus a
*group* id per box (the image, or image x class). Pairwise work is done on padded
``(B, R, C)`` blocks of groups, so there is no Python loop over boxes; the only
loop is over the detection rank inside a block (at most the largest number of
detections of one group), each step working on every group of the block at once.

    IoU(a, b) = |a ∩ b| / (|a| + |b| - |a ∩ b|)
    IoA(a, r) = |a ∩ r| / |a|          (how much of box a lies inside region r)

A zero denominator gives 0. (The CrowdHuman protocol has its own overlaps, with the official
code's eps: ``retinanet.evaluation.crowdhuman``.)
"""

from typing import Iterator, NamedTuple, Optional, Sequence

import numpy as np

# Elements of one padded (B, R, C) block: ~16 MB per float64 temporary, so the
# IoU computation (about six temporaries) stays near 100 MB whatever the data.
BLOCK_ELEMENTS = 1 << 21

# Detections absorbed by an ignore region must lie more than half inside it.
IGNORE_IOA_THRESHOLD = 0.5


def _intersection(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """boxes1 (..., N, 4), boxes2 (..., M, 4) x1y1x2y2 -> intersection areas (..., N, M)."""
    # In-place steps: on padded blocks of millions of pairs, every temporary counts.
    width = np.minimum(boxes1[..., :, None, 2], boxes2[..., None, :, 2])
    width -= np.maximum(boxes1[..., :, None, 0], boxes2[..., None, :, 0])
    np.maximum(width, 0.0, out=width)
    height = np.minimum(boxes1[..., :, None, 3], boxes2[..., None, :, 3])
    height -= np.maximum(boxes1[..., :, None, 1], boxes2[..., None, :, 1])
    np.maximum(height, 0.0, out=height)
    width *= height
    return width


def xywh_to_xyxy(boxes) -> np.ndarray:
    """B boxes [x, y, w, h] (lists or an array) -> (B, 4) float64 x1y1x2y2, the official float64 addition."""
    array = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    array[:, 2:] += array[:, :2]
    return array


def box_area(boxes: np.ndarray) -> np.ndarray:
    """boxes (..., 4) x1y1x2y2 -> areas (...); inverted boxes have area 0."""
    return np.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * np.maximum(boxes[..., 3] - boxes[..., 1], 0.0)


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """IoU of boxes1 (..., N, 4) with boxes2 (..., M, 4) -> (..., N, M); leading dims broadcast."""
    intersection = _intersection(boxes1, boxes2)
    union = box_area(boxes1)[..., :, None] + box_area(boxes2)[..., None, :]
    union -= intersection
    # A zero union means two empty boxes, whose intersection (left in place) is already 0.
    return np.divide(intersection, union, out=intersection, where=union > 0)


def box_ioa(boxes: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Intersection over the area of each box: boxes (..., N, 4), regions (..., M, 4) -> (..., N, M)."""
    intersection = _intersection(boxes, regions)
    area = box_area(boxes)[..., :, None]
    return np.divide(intersection, area, out=intersection, where=area > 0)


class GroupBlock(NamedTuple):
    """Groups padded together: groups (B,), rows (B, R) and cols (B, C) index the flat arrays, -1 pads."""

    groups: np.ndarray
    rows: np.ndarray
    cols: np.ndarray


def _ranked_items(groups: np.ndarray, rank: np.ndarray) -> "tuple[np.ndarray, np.ndarray, np.ndarray]":
    """The items of ranked groups, sorted by group rank with the input order kept inside a group.

    groups: (N,) group of each item; rank: (num_groups,) rank of each group, -1 to leave it out.
    Returns (item indices (K,), their group ranks (K,) non-decreasing, position inside the group (K,)).
    """
    item_ranks = rank[groups]
    items = np.flatnonzero(item_ranks >= 0)
    items = items[np.argsort(item_ranks[items], kind="stable")]
    ranks = item_ranks[items]
    first = np.searchsorted(ranks, ranks, side="left")
    return items, ranks, np.arange(len(items)) - first


def iter_group_blocks(
    row_groups: np.ndarray,
    col_groups: np.ndarray,
    num_groups: int,
    block_elements: Optional[int] = None,
) -> Iterator[GroupBlock]:
    """Pad the groups that have both rows and columns into blocks of at most ~block_elements pairs.

    row_groups: (N,) group of each row item (kept in input order inside a group);
    col_groups: (M,) group of each column item. Groups are sorted by size so that a
    block pads to similar shapes; a single group larger than the budget gets its own block.
    block_elements defaults to the module's BLOCK_ELEMENTS, read at call time.
    """
    block_elements = BLOCK_ELEMENTS if block_elements is None else block_elements
    row_counts = np.bincount(row_groups, minlength=num_groups)
    col_counts = np.bincount(col_groups, minlength=num_groups)
    active = np.flatnonzero((row_counts > 0) & (col_counts > 0))
    active = active[np.lexsort((col_counts[active], row_counts[active]))]
    rank = np.full(num_groups, -1, dtype=np.int64)
    rank[active] = np.arange(len(active))
    # Items sorted by group rank, so that each block's items are one contiguous slice.
    row_items, row_ranks, row_positions = _ranked_items(row_groups, rank)
    col_items, col_ranks, col_positions = _ranked_items(col_groups, rank)
    rows_needed = row_counts[active]  # non-decreasing
    start = 0
    while start < len(active):
        cols_needed = np.maximum.accumulate(col_counts[active[start:]])
        # Both factors only grow with n, so the padded size of the block [start, start + n) does too.
        cost = np.arange(1, len(cols_needed) + 1) * rows_needed[start:] * cols_needed
        size = max(1, int(np.searchsorted(cost, block_elements, side="right")))
        yield GroupBlock(
            groups=active[start : start + size],
            rows=_pad(row_items, row_ranks, row_positions, start, size, int(rows_needed[start + size - 1])),
            cols=_pad(col_items, col_ranks, col_positions, start, size, int(cols_needed[size - 1])),
        )
        start += size


def _pad(
    items: np.ndarray, ranks: np.ndarray, positions: np.ndarray, start: int, size: int, width: int
) -> np.ndarray:
    """Scatter the items of group ranks [start, start + size) into a (size, width) table; -1 where empty."""
    low, high = np.searchsorted(ranks, [start, start + size])
    table = np.full((size, width), -1, dtype=np.int64)
    table[ranks[low:high] - start, positions[low:high]] = items[low:high]
    return table


def gather_padded(boxes: np.ndarray, index: np.ndarray) -> np.ndarray:
    """boxes (N, 4), index (B, K) with -1 pads -> (B, K, 4); padded entries are zero boxes."""
    padded = boxes[np.maximum(index, 0)]
    padded[index < 0] = 0.0
    return padded


def block_iou(block: GroupBlock, row_boxes: np.ndarray, col_boxes: np.ndarray) -> np.ndarray:
    """IoU of a block's rows with its columns (B, R, C); -inf where either side is padding."""
    ious = box_iou(gather_padded(row_boxes, block.rows), gather_padded(col_boxes, block.cols))
    ious[(block.rows < 0)[:, :, None] | (block.cols < 0)[:, None, :]] = -np.inf
    return ious


def greedy_match_block(
    block: GroupBlock, ious: np.ndarray, iou_threshold: float, inclusive: bool
) -> "tuple[np.ndarray, np.ndarray]":
    """Greedy matching inside every group of a block at once.

    ious: (B, R, C) from ``block_iou``, rows in descending score order. Each row, in order,
    takes the still-unmatched column with the highest IoU if that IoU is >= iou_threshold
    (inclusive) or > iou_threshold (not inclusive); ties go to the lower column.
    Returns (row indices (P,), column indices (P,)) of the matched pairs, as flat-array indices.
    """
    num_slots, num_ranks, _ = ious.shape
    slots = np.arange(num_slots)
    taken = np.zeros((num_slots, ious.shape[2]), dtype=bool)
    best_cols = np.full((num_slots, num_ranks), -1, dtype=np.int64)
    # The loop runs over ranks, each step handling that rank's detection in every group.
    for rank in range(num_ranks):
        available = np.where(taken, -np.inf, ious[:, rank, :])
        best = available.argmax(axis=1)
        best_iou = available[slots, best]
        hit = best_iou >= iou_threshold if inclusive else best_iou > iou_threshold
        hit &= np.isfinite(best_iou)
        taken[slots[hit], best[hit]] = True
        best_cols[hit, rank] = best[hit]
    hit_slots, hit_ranks = np.nonzero(best_cols >= 0)
    return block.rows[hit_slots, hit_ranks], block.cols[hit_slots, best_cols[hit_slots, hit_ranks]]


def greedy_match(
    det_boxes: np.ndarray,
    det_groups: np.ndarray,
    gt_boxes: np.ndarray,
    gt_groups: np.ndarray,
    num_groups: int,
    iou_threshold: float,
    inclusive: bool,
) -> np.ndarray:
    """Greedy score-ordered matching of detections to ground truth inside each group.

    det_boxes: (D, 4) x1y1x2y2, ordered by descending score inside each group;
    det_groups: (D,) int; gt_boxes: (G, 4); gt_groups: (G,) int.
    Each detection, in order, takes the still-unmatched ground truth of its group with
    the highest IoU, if that IoU is >= iou_threshold (inclusive) or > iou_threshold
    (not inclusive); ties go to the lower ground-truth index.
    Returns (D,) int64: index into gt_boxes of the matched ground truth, or -1.
    """
    matches = np.full(len(det_boxes), -1, dtype=np.int64)
    for block in iter_group_blocks(det_groups, gt_groups, num_groups):
        ious = block_iou(block, det_boxes, gt_boxes)
        rows, cols = greedy_match_block(block, ious, iou_threshold, inclusive)
        matches[rows] = cols
    return matches


def max_ioa_in_group(
    boxes: np.ndarray,
    groups: np.ndarray,
    regions: np.ndarray,
    region_groups: np.ndarray,
    num_groups: int,
) -> np.ndarray:
    """For each box (N, 4), the largest IoA with the regions (M, 4) of its own group -> (N,); 0 if none."""
    best = np.zeros(len(boxes), dtype=np.float64)
    for block in iter_group_blocks(groups, region_groups, num_groups):
        # Padding regions are empty boxes at the origin: their IoA is 0, which never wins the max.
        ioas = box_ioa(gather_padded(boxes, block.rows), gather_padded(regions, block.cols))
        real = block.rows >= 0
        best[block.rows[real]] = ioas.max(axis=2)[real]
    return best


class FlatDetections(NamedTuple):
    """A data set's detections as flat arrays: boxes (D, 4) float64, scores, labels, images (D,)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    images: np.ndarray


class FlatGroundTruth(NamedTuple):
    """Ground truth as flat arrays: boxes (G, 4), labels (G,), images (G,); ignore regions likewise."""

    boxes: np.ndarray
    labels: np.ndarray
    images: np.ndarray
    ignore: np.ndarray
    ignore_labels: np.ndarray
    ignore_images: np.ndarray


def _concat(arrays: "list[np.ndarray]", columns: int, dtype) -> np.ndarray:
    if not arrays:
        return np.zeros((0, columns) if columns else (0,), dtype=dtype)
    return np.concatenate([array.astype(dtype, copy=False) for array in arrays])


def _image_ids(counts: "list[int]") -> np.ndarray:
    return np.repeat(np.arange(len(counts), dtype=np.int64), counts)


def _checked(record: dict, key: str, index: int, what: str, columns: int) -> np.ndarray:
    """record[key] as an (n, columns) array, or (n,) when columns is 0; a wrong shape is a ValueError."""
    if key not in record:
        raise ValueError(f"{what}[{index}] has no {key!r} entry")
    array = np.asarray(record[key])
    if array.size == 0:
        return array.reshape((0, columns) if columns else (0,))
    if (columns and (array.ndim != 2 or array.shape[1] != columns)) or (not columns and array.ndim != 1):
        shape = f"(n, {columns})" if columns else "(n,)"
        raise ValueError(f"{what}[{index}][{key!r}] has shape {array.shape}, expected {shape}")
    return array


def flatten_detections(detections: Sequence[dict]) -> FlatDetections:
    """Per-image dicts {boxes (D_i, 4), scores (D_i,), labels (D_i,)} -> one FlatDetections."""
    boxes, scores, labels = [], [], []
    for index, record in enumerate(detections):
        boxes.append(_checked(record, "boxes", index, "detections", 4))
        scores.append(_checked(record, "scores", index, "detections", 0))
        labels.append(_checked(record, "labels", index, "detections", 0))
        if not len(boxes[-1]) == len(scores[-1]) == len(labels[-1]):
            raise ValueError(
                f"detections[{index}] has {len(boxes[-1])} boxes, {len(scores[-1])} scores "
                f"and {len(labels[-1])} labels"
            )
    return FlatDetections(
        boxes=_concat(boxes, 4, np.float64),
        scores=_concat(scores, 0, np.float64),
        labels=_concat(labels, 0, np.int64),
        images=_image_ids([len(s) for s in scores]),
    )


def flatten_ground_truths(ground_truths: Sequence[dict]) -> FlatGroundTruth:
    """Per-image dicts {boxes (N_i, 4), labels (N_i,), ignore (M_i, 4), ignore_labels (M_i,)} -> flat arrays.

    ``ignore_labels == -1`` marks a region that is ignored for every class.
    """
    boxes, labels, ignore, ignore_labels = [], [], [], []
    for index, record in enumerate(ground_truths):
        boxes.append(_checked(record, "boxes", index, "ground_truths", 4))
        labels.append(_checked(record, "labels", index, "ground_truths", 0))
        ignore.append(_checked(record, "ignore", index, "ground_truths", 4))
        ignore_labels.append(_checked(record, "ignore_labels", index, "ground_truths", 0))
        if len(boxes[-1]) != len(labels[-1]) or len(ignore[-1]) != len(ignore_labels[-1]):
            raise ValueError(f"ground_truths[{index}]: boxes/labels or ignore/ignore_labels lengths differ")
    return FlatGroundTruth(
        boxes=_concat(boxes, 4, np.float64),
        labels=_concat(labels, 0, np.int64),
        images=_image_ids([len(b) for b in boxes]),
        ignore=_concat(ignore, 4, np.float64),
        ignore_labels=_concat(ignore_labels, 0, np.int64),
        ignore_images=_image_ids([len(b) for b in ignore]),
    )
