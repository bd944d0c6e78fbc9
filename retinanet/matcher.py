"""Assignment of anchors to ground-truth boxes.

torchvision's ``Matcher`` (private ``_utils``) gives the same three outcomes; the ignore-region
rules of ``ignored_classes`` are what it lacks, so both live here in one module.
"""
import torch

BACKGROUND = -1
"""Anchor overlaps no box enough: a negative for every class."""
BETWEEN_THRESHOLDS = -2
"""Anchor's best IoU is in [negative_threshold, positive_threshold): left out of the loss."""


def match_anchors(
    iou: torch.Tensor, positive_threshold: float = 0.5, negative_threshold: float = 0.4
) -> torch.Tensor:
    """Match each anchor to the box it overlaps most.

    iou: (N_boxes, N_anchors) IoU matrix.
    Returns matched_idxs: (N_anchors,) int64, the index of the matched box for anchors whose best
    IoU >= positive_threshold, ``BACKGROUND`` below negative_threshold, ``BETWEEN_THRESHOLDS``
    in between. With no boxes every anchor is ``BACKGROUND``.
    """
    num_anchors = iou.shape[1]
    if iou.shape[0] == 0:
        return torch.full((num_anchors,), BACKGROUND, dtype=torch.int64, device=iou.device)
    best_iou, matched_idxs = iou.max(dim=0)
    matched_idxs = matched_idxs.clone()
    matched_idxs[best_iou < positive_threshold] = BETWEEN_THRESHOLDS
    matched_idxs[best_iou < negative_threshold] = BACKGROUND
    return matched_idxs


def ignored_classes(
    ioa: torch.Tensor, ignore_labels: torch.Tensor, num_classes: int, threshold: float = 0.5
) -> torch.Tensor:
    """Which (anchor, class) pairs lie in an ignore region.

    ioa: (N_anchors, M) intersection over anchor area with M ignore regions;
    ignore_labels: (M,) class index of each region, -1 for a region that ignores every class.
    Returns (N_anchors, num_classes) bool: True where the anchor is covered (ioa >= threshold)
    by a region of that class.
    """
    covered = ioa >= threshold  # (A, M)
    region_classes = torch.zeros(ignore_labels.shape[0], num_classes, dtype=torch.bool, device=ioa.device)
    every_class = ignore_labels < 0
    region_classes[every_class] = True
    one_class = torch.nonzero(~every_class).squeeze(1)
    region_classes[one_class, ignore_labels[one_class]] = True
    # (A, M) @ (M, K): an anchor is ignored for class k when any covering region ignores k.
    return (covered.float() @ region_classes.float()) > 0
