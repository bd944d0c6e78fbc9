"""RetinaNet training losses: focal loss for classes, smooth L1 for box deltas.

Focal loss: Lin et al., "Focal Loss for Dense Object Detection", https://arxiv.org/abs/1708.02002
The formula is ``torchvision.ops.sigmoid_focal_loss``'s; it is written here with its gradient in one
pass (``_FocalLossPerImage``) because autograd through the element-wise form keeps ~20 dense
(B, A, K) temporaries per step.
"""
import itertools
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from retinanet.box_coder import BoxCoder, reference_boxes
from retinanet.boxes import box_ioa, box_iou
from retinanet.matcher import BACKGROUND, BETWEEN_THRESHOLDS, ignored_classes, match_anchors


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
    boxes_per_anchor: int = 1,
    instances_per_anchor: int = 1,
):
    """Per-anchor training targets for a batch, kept sparse: no (B, A, K) one-hot is built.

    targets: per image ``{"boxes": (N, 4), "labels": (N,), "ignore": (M, 4) optional,
    "ignore_labels": (M,) optional, -1 = every class}``; anchors: (A, 4). A person-triplet target
    also has "visible_boxes" (N, 4), "head_boxes" (N, 4), "head_valid" (N,) bool and optionally
    "visible_valid" (N,) bool (default all True; False on a row that is a head of its own); anchors
    are matched by the "boxes" (a person's full body) and regress all three, each from its
    ``reference_boxes`` box.
    Returns (anchor_labels (B, A) int64: class of the matched box, -1 for a non-positive anchor;
    anchor_weights (B, A) bool: False where the anchor is left out for every class (IoU between the
    thresholds, or inside an every-class ignore region); class_ignored (B, A, K) bool or None: True where
    a class-specific ignore region leaves that class out, None when no image has one;
    box_targets (B, A, 4 S), S = 1 or 3 boxes; box_weights (B, A, S) bool: whether each box of a
    positive anchor is trained (False for an ignored head)). Positive anchors are never ignored.

    instances_per_anchor: I = 2 gives each anchor the two boxes it overlaps most, the best as its
    first instance and the second best as its second, each positive, between thresholds or
    background by its own IoU (CrowdDet's targets for two predictions per anchor); every A above
    is then A I rows, anchor-major (row a I + i: instance i of anchor a), and ``emd_targets``
    decides which prediction of an anchor learns which.
    """
    device = anchors.device
    labels_per_image, weights_per_image, class_ignored_per_image, box_targets_per_image = [], [], [], []
    box_weights_per_image = []
    num_rows = anchors.shape[0] * instances_per_anchor
    # (A I, 4 S) the reference boxes of every row's S boxes
    references = reference_boxes(anchors, boxes_per_anchor).repeat_interleave(instances_per_anchor, dim=0)
    for target in targets:
        boxes, labels = target["boxes"], target["labels"]
        matched_idxs = _matched_instances(box_iou(boxes, anchors), instances_per_anchor, positive_threshold,
                                          negative_threshold)  # (A I,)
        positive = matched_idxs >= 0
        # (N, S, 4) every box an anchor regresses, and (N, S) whether each is trained
        kinds, kind_valid = _regressed_boxes(target, boxes_per_anchor)
        matched_box = matched_idxs.clamp(min=0)
        if boxes.shape[0] > 0:
            anchor_labels = torch.where(positive, labels[matched_box], -1)
            box_target = box_coder.encode(kinds[matched_box], references).reshape(num_rows, -1)
            box_weight = kind_valid[matched_box] & positive[:, None]
        else:
            anchor_labels = torch.full_like(matched_idxs, -1)
            box_target = anchors.new_zeros(num_rows, 4 * boxes_per_anchor)
            box_weight = torch.zeros(num_rows, boxes_per_anchor, dtype=torch.bool, device=device)
        weight = matched_idxs != BETWEEN_THRESHOLDS
        class_ignored = None
        ignore = target.get("ignore")
        if ignore is not None and ignore.shape[0] > 0:
            ignore_labels = target.get("ignore_labels")
            if ignore_labels is None:
                ignore_labels = torch.full((ignore.shape[0],), -1, dtype=torch.int64, device=ignore.device)
            ioa = box_ioa(anchors, ignore).repeat_interleave(instances_per_anchor, dim=0)  # (A I, M)
            every_class = ignore_labels < 0
            weight &= ~((ioa[:, every_class] >= ignore_threshold).any(dim=1) & ~positive)
            if not bool(every_class.all()):
                one_class = ~every_class
                class_ignored = ignored_classes(ioa[:, one_class], ignore_labels[one_class], num_classes,
                                                ignore_threshold) & ~positive[:, None]
        labels_per_image.append(anchor_labels)
        weights_per_image.append(weight)
        class_ignored_per_image.append(class_ignored)
        box_targets_per_image.append(box_target)
        box_weights_per_image.append(box_weight)
    if all(c is None for c in class_ignored_per_image):
        class_ignored = None
    else:
        none = torch.zeros(num_rows, num_classes, dtype=torch.bool, device=device)
        class_ignored = torch.stack([none if c is None else c for c in class_ignored_per_image])
    return (torch.stack(labels_per_image), torch.stack(weights_per_image), class_ignored,
            torch.stack(box_targets_per_image), torch.stack(box_weights_per_image))


def _matched_instances(iou: torch.Tensor, instances_per_anchor: int, positive_threshold: float,
                       negative_threshold: float) -> torch.Tensor:
    """iou (N, A) -> (A I,) matched box of each anchor's I instances (``match_anchors``'s codes), anchor-major:
    instance i takes the box the anchor overlaps (i+1)-th most, judged by that IoU."""
    if instances_per_anchor == 1:
        return match_anchors(iou, positive_threshold, negative_threshold)
    # no box, or fewer boxes than instances: the missing ones overlap the anchor at IoU 0
    padded = torch.cat([iou, iou.new_zeros(max(instances_per_anchor - iou.shape[0], 0), iou.shape[1])])
    top_iou, top_idx = padded.topk(instances_per_anchor, dim=0)  # (I, A), best first
    matched = torch.where(top_iou >= positive_threshold, top_idx, BETWEEN_THRESHOLDS)
    matched = torch.where(top_iou < negative_threshold, BACKGROUND, matched)
    return matched.t().reshape(-1)


def _regressed_boxes(target: Dict[str, torch.Tensor], boxes_per_anchor: int):
    """One image's boxes as (N, S, 4) and which are trained (N, S) bool: S = 1 (the boxes) or 3
    (full, visible, head of each person; a visible or head box flagged invalid is not trained)."""
    boxes = target["boxes"]
    valid = torch.ones(boxes.shape[0], 1, dtype=torch.bool, device=boxes.device)
    if boxes_per_anchor == 1:
        return boxes[:, None], valid
    if boxes_per_anchor != 3 or "head_boxes" not in target:
        raise ValueError(f"{boxes_per_anchor} boxes per anchor need person-triplet targets "
                         "(boxes, visible_boxes, head_boxes, head_valid)")
    kinds = torch.stack([boxes, target["visible_boxes"], target["head_boxes"]], dim=1)
    visible_valid = target.get("visible_valid")
    visible_valid = valid if visible_valid is None else visible_valid.to(torch.bool)[:, None]
    return kinds, torch.cat([valid, visible_valid, target["head_valid"].to(torch.bool)[:, None]], dim=1)


# log(p) is -inf where sigmoid underflows to 0 (logits under about -88.7); clamped here, it keeps
# softplus finite. Below it a negative's loss and gradient are under 1e-34 times its weight.
MIN_LOG_P = -80.0


class _FocalLossPerImage(torch.autograd.Function):
    """Per-image sum of the weighted focal loss; its gradient is computed in the same pass.

    Autograd through the element-wise formula keeps ~20 (B, A, K) temporaries alive and reads them
    back in backward; at 512x512 with 80 classes each is 16 MB per image, and their allocation
    (page faults) dominates the loss. Here the dense part is the negative term for every entry but
    the few positive ones, whose positive term is added afterwards.
    """

    @staticmethod
    def forward(ctx, logits, anchor_labels, weights, alpha: float, gamma: float):
        # logits (B, A, K) float32; anchor_labels (B, A); weights broadcastable to (B, A, K)
        p = torch.sigmoid(logits)
        softplus = torch.log(p).clamp_(min=MIN_LOG_P)
        # -log(1 - p) = softplus(x) = x - log(p) >= 0, finite for every finite x (log(1 - p) is -inf from
        # x ~ 17 on); torch's softplus and log1p are not vectorised on CPU (3-5x slower). The clamps
        # make it 0 below MIN_LOG_P, where it is under 2e-35, and keep rounding from making it negative.
        torch.sub(logits, softplus, out=softplus).clamp_(min=0.0)
        image, anchor = (anchor_labels >= 0).nonzero(as_tuple=True)
        label = anchor_labels[image, anchor]
        scale = p.pow(gamma).mul_(weights).mul_(1 - alpha)  # (1 - alpha) p^gamma w
        scale[image, anchor, label] = 0.0  # positives: no negative term (subtracting it would cancel digits)
        # A pairwise sum: a 4M-term float32 dot product (einsum) would drift by ~1e-3.
        loss = (scale * softplus).sum(dim=(1, 2))
        # d/dx [(1 - alpha) p^gamma softplus(x)] = (1 - alpha) p^gamma (p + gamma (1 - p) softplus(x))
        grad = softplus.mul_(gamma)  # built in place: one (B, A, K) allocation fewer
        grad.addcmul_(p, grad, value=-1).add_(p).mul_(scale)

        x, p_pos = logits[image, anchor, label], p[image, anchor, label]
        q = 1 - p_pos
        log_p = F.logsigmoid(x)  # stable for every finite x: -softplus(-x)
        loss = loss.index_add(0, image, -alpha * q.pow(gamma) * log_p)
        grad[image, anchor, label] = alpha * q.pow(gamma) * (gamma * p_pos * log_p - q)
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad.mul_(grad_output[:, None, None]), None, None, None, None


def focal_loss_per_image(
    logits: torch.Tensor,
    anchor_labels: torch.Tensor,
    weights: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Sum over anchors and classes of w * FL(p_t), FL = -alpha_t (1 - p_t)^gamma log(p_t), p = sigmoid(logits).

    logits: (B, A, K) of any float dtype, computed in float32 (finite for every finite logit);
    anchor_labels: (B, A) class of each positive anchor, -1 elsewhere; weights: broadcastable to
    (B, A, K), 1 at every positive entry. Returns (B,) float32, differentiable in ``logits``.
    """
    return _FocalLossPerImage.apply(logits.float(), anchor_labels, weights, alpha, gamma)


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

    class_logits: (B, A, K); box_deltas: (B, A, 4 S), S boxes per anchor (3 for person triplets:
    each box is a task of its own, weighted as the one box of a plain model); anchors: (A, 4);
    targets: one dict per image (``build_targets``). With I predictions per anchor (class_logits
    (B, A I, K) and box_deltas (B, A I, 4 S), instance-minor rows) each anchor's predictions learn
    its I targets in the order that costs least (``emd_targets``).
    classification = mean_b [sum_{a,k} w FL / max(P_b, 1)]
    regression     = mean_b [sum_{a positive, s trained, c} smoothL1 / max(4 P_b, 1)]  (the original's per-image mean)
    Per-image normalisation keeps a multi-process batch's loss equal to the single-process one.
    """
    box_coder = box_coder or BoxCoder()
    num_classes = class_logits.shape[-1]
    instances_per_anchor = class_logits.shape[1] // anchors.shape[0]
    with torch.no_grad():
        boxes_per_anchor = box_deltas.shape[-1] // 4
        anchor_targets = build_targets(targets, anchors, num_classes, box_coder, boxes_per_anchor=boxes_per_anchor,
                                       instances_per_anchor=instances_per_anchor)
        if instances_per_anchor > 1:
            anchor_targets = emd_targets(class_logits, box_deltas, anchor_targets, instances_per_anchor,
                                         alpha, gamma, beta)
        anchor_labels, anchor_weights, class_ignored, box_targets, box_weights = anchor_targets
        box_weights = box_weights.repeat_interleave(4, dim=2)  # (B, A, 4 S)
        weights = anchor_weights[..., None].to(torch.float32)  # (B, A, 1)
        if class_ignored is not None:
            weights = weights * ~class_ignored  # (B, A, K)
    positive = anchor_labels >= 0
    num_positive = positive.sum(dim=1).to(torch.float32)  # (B,)

    class_loss = focal_loss_per_image(class_logits, anchor_labels, weights, alpha, gamma)
    class_loss = class_loss / num_positive.clamp(min=1)

    box_loss = smooth_l1(box_deltas.float() - box_targets, beta) * box_weights
    box_loss = box_loss.sum(dim=(1, 2)) / (4 * num_positive).clamp(min=1)
    return {"classification": class_loss.mean(), "regression": box_loss.mean()}


def emd_targets(class_logits: torch.Tensor, box_deltas: torch.Tensor, anchor_targets: tuple,
                instances_per_anchor: int, alpha: float = 0.25, gamma: float = 2.0, beta: float = 1.0 / 9.0):
    """The EMD loss's assignment: an anchor's I predictions take its I targets in the order of least loss.

    CrowdDet (Chu et al., "Detection in Crowded Scenes: One Proposal, Multiple Predictions",
    https://arxiv.org/abs/2003.09163) lets one anchor predict the two people it overlaps most, and
    trains it with the minimum over the assignments of predictions to targets of their summed loss,
    so that neither prediction is tied to "the front person". Here the loss of one prediction
    against one target is its focal loss plus a quarter of its smooth-L1 sum (the weights
    ``retinanet_loss`` gives them); the minimum's gradient is the gradient of the cheapest
    assignment, so the targets are permuted and the usual losses computed on them.

    class_logits (B, A I, K), box_deltas (B, A I, 4 S): the predictions (read only);
    anchor_targets: ``build_targets``'s five outputs with instances_per_anchor = I. Returns them
    with each anchor's I rows permuted. Only anchors whose rows differ (a positive, or unequal
    weights) are looked at: for the others every order costs the same.
    """
    labels, weights, ignored, box_targets, box_weights = anchor_targets
    batch_size, num_rows, num_classes = class_logits.shape
    instances = instances_per_anchor
    num_anchors = num_rows // instances
    per_anchor = labels.reshape(batch_size, num_anchors, instances)
    anchor_weights = weights.reshape(batch_size, num_anchors, instances)
    differs = (per_anchor >= 0).any(dim=2) | (anchor_weights != anchor_weights[..., :1]).any(dim=2)
    image, anchor = torch.nonzero(differs, as_tuple=True)
    if image.numel() == 0:
        return anchor_targets
    rows = anchor[:, None] * instances + torch.arange(instances, device=labels.device)  # (n, I)
    image_rows = image[:, None].expand_as(rows)
    logits = class_logits[image_rows, rows].float()  # (n, I, K)
    target_labels = labels[image_rows, rows]  # (n, I)
    class_weight = weights[image_rows, rows][..., None].float()  # (n, I, 1)
    if ignored is not None:
        class_weight = class_weight * ~ignored[image_rows, rows]
    onehot = F.one_hot(target_labels.clamp(min=0), num_classes) * (target_labels >= 0)[..., None]
    # (n, I predictions, I targets): the cost of prediction i learning target j
    x, y = torch.broadcast_tensors(logits[:, :, None], onehot[:, None].float())
    focal = sigmoid_focal_loss(x, y, alpha, gamma, reduction="none")
    cost = (focal * class_weight[:, None]).sum(dim=3)
    box_weight = box_weights[image_rows, rows].repeat_interleave(4, dim=2)[:, None]  # (n, 1, I, 4 S)
    residual = box_deltas[image_rows, rows].float()[:, :, None] - box_targets[image_rows, rows][:, None]
    cost = cost + (smooth_l1(residual, beta) * box_weight).sum(dim=3) / 4
    orders = torch.tensor(list(itertools.permutations(range(instances))), device=labels.device)  # (P, I)
    order_cost = cost[:, torch.arange(instances, device=labels.device), orders].sum(dim=2)  # (n, P)
    # argmin takes the first of equal costs: the identity order, where the two orders tie
    chosen = rows.gather(1, orders[order_cost.argmin(dim=1)])  # (n, I): the row each prediction learns
    permuted = []
    for value in anchor_targets:
        if value is None:
            permuted.append(None)
            continue
        value = value.clone()
        value[image_rows, rows] = value[image_rows, chosen]
        permuted.append(value)
    return tuple(permuted)
