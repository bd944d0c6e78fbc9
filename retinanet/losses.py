"""RetinaNet training losses: focal loss for classes, smooth L1 for box deltas.

Focal loss: Lin et al., "Focal Loss for Dense Object Detection", https://arxiv.org/abs/1708.02002
"""
from typing import Dict, List, Optional

import torch
from torchvision.ops import sigmoid_focal_loss

from retinanet.box_coder import BoxCoder
from retinanet.boxes import box_ioa, box_iou
from retinanet.matcher import BETWEEN_THRESHOLDS, ignored_classes, match_anchors


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Element-wise focal loss FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), p = sigmoid(logits).

    logits, targets: same shape, targets in {0, 1}. Returns the unreduced loss (same shape).
    """
    return sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="none")


def smooth_l1(diff: torch.Tensor, beta: float = 1.0 / 9.0) -> torch.Tensor:
    """Element-wise smooth L1: 0.5 x^2 / beta for |x| < beta, else |x| - 0.5 beta."""
    diff = diff.abs()
    return torch.where(diff < beta, 0.5 * diff ** 2 / beta, diff - 0.5 * beta)


def build_targets(
    targets: List[Dict[str, torch.Tensor]],
    anchors: torch.Tensor,
    num_classes: int,
    box_coder: BoxCoder,
    positive_threshold: float = 0.5,
    negative_threshold: float = 0.4,
    ignore_threshold: float = 0.5,
):
    """Per-anchor training targets for a batch.

    targets: per image ``{"boxes": (N, 4), "labels": (N,), "ignore": (M, 4) optional,
    "ignore_labels": (M,) optional, -1 = every class}``; anchors: (A, 4).
    Returns (class_targets (B, A, K) float, class_weights (B, A, K) bool: which terms count,
    box_targets (B, A, 4), positive (B, A) bool).
    """
    class_targets, class_weights, box_targets, positives = [], [], [], []
    for target in targets:
        boxes, labels = target["boxes"], target["labels"]
        matched_idxs = match_anchors(box_iou(boxes, anchors), positive_threshold, negative_threshold)
        positive = matched_idxs >= 0
        matched_box = matched_idxs.clamp(min=0)

        one_hot = torch.zeros(anchors.shape[0], num_classes, dtype=anchors.dtype, device=anchors.device)
        if boxes.shape[0] > 0:
            one_hot[positive, labels[matched_box[positive]]] = 1.0
        weight = (matched_idxs != BETWEEN_THRESHOLDS)[:, None].expand(-1, num_classes).clone()

        ignore = target.get("ignore")
        if ignore is not None and ignore.shape[0] > 0:
            ignore_labels = target.get("ignore_labels")
            if ignore_labels is None:
                ignore_labels = torch.full((ignore.shape[0],), -1, dtype=torch.int64, device=ignore.device)
            ignored = ignored_classes(box_ioa(anchors, ignore), ignore_labels, num_classes, ignore_threshold)
            weight &= ~(ignored & ~positive[:, None])

        if boxes.shape[0] > 0:
            box_target = box_coder.encode(boxes[matched_box], anchors)
        else:
            box_target = torch.zeros_like(anchors)
        class_targets.append(one_hot)
        class_weights.append(weight)
        box_targets.append(box_target)
        positives.append(positive)
    return torch.stack(class_targets), torch.stack(class_weights), torch.stack(box_targets), torch.stack(positives)


def retinanet_loss(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    anchors: torch.Tensor,
    targets: List[Dict[str, torch.Tensor]],
    box_coder: Optional[BoxCoder] = None,
    alpha: float = 0.25,
    gamma: float = 2.0,
    beta: float = 1.0 / 9.0,
) -> Dict[str, torch.Tensor]:
    """Focal + smooth-L1 loss of a batch, normalised per image by its positive anchors, averaged over images.

    class_logits: (B, A, K); box_deltas: (B, A, 4); anchors: (A, 4); targets: one dict per image.
    classification = mean_b [sum_{a,k} w FL / max(P_b, 1)]
    regression     = mean_b [sum_{a positive, c} smoothL1 / max(4 P_b, 1)]  (the original's per-image mean)
    Per-image normalisation keeps a multi-process batch's loss equal to the single-process one.
    """
    box_coder = box_coder or BoxCoder()
    num_classes = class_logits.shape[-1]
    with torch.no_grad():
        class_targets, class_weights, box_targets, positive = build_targets(targets, anchors, num_classes, box_coder)
    num_positive = positive.sum(dim=1).to(class_logits.dtype)  # (B,)

    class_loss = focal_loss(class_logits.float(), class_targets, alpha, gamma)
    class_loss = (class_loss * class_weights).sum(dim=(1, 2)) / num_positive.clamp(min=1)

    box_loss = smooth_l1(box_deltas.float() - box_targets, beta) * positive[..., None]
    box_loss = box_loss.sum(dim=(1, 2)) / (4 * num_positive).clamp(min=1)
    return {"classification": class_loss.mean(), "regression": box_loss.mean()}
