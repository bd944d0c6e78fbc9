"""From raw head outputs to detections: score filter, top-k per level, decode, clip, NMS."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torchvision.ops import batched_nms

from retinanet.box_coder import BoxCoder
from retinanet.boxes import clip_boxes

# NMS runs on each image's best CANDIDATES_PER_DETECTION * max_detections candidates only (more
# if they do not yield max_detections): greedy NMS keeps or drops a box by looking at higher-scoring
# boxes alone, so the best max_detections survivors never depend on lower-scoring candidates.
CANDIDATES_PER_DETECTION = 4


def level_topk(logits: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k best (anchor, class) entries of one pyramid level, per image.

    logits: (B, A_l, K). Returns top logits (B, k'), anchor index (B, k') in [0, A_l) and class
    index (B, k'), with k' = min(k, A_l * K), in no particular order.
    """
    batch_size, num_anchors, num_classes = logits.shape
    anchor_subset = None
    if num_classes > 1 and num_anchors > k:
        # The k best entries lie on at most k anchors, each among the k anchors with the highest best
        # class (any anchor ranked lower has k entries above it), so top-k over k * K entries instead
        # of A_l * K: a max over classes is far cheaper than a top-k over all of them.
        anchor_subset = logits.amax(dim=2).topk(k, dim=1, sorted=False).indices  # (B, k)
        logits = logits.gather(1, anchor_subset[:, :, None].expand(-1, -1, num_classes))  # (B, k, K)
    flat_logits = logits.reshape(batch_size, -1)
    top_logits, top_flat = flat_logits.topk(min(k, flat_logits.shape[1]), dim=1, sorted=False)
    anchor_idx = top_flat // num_classes
    if anchor_subset is not None:
        anchor_idx = anchor_subset.gather(1, anchor_idx)
    return top_logits, anchor_idx, top_flat % num_classes


def postprocess_detections(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    anchors: torch.Tensor,
    num_anchors_per_level: Sequence[int],
    box_coder: BoxCoder,
    image_sizes: Sequence[Tuple[int, int]],
    image_scales: Optional[Sequence[float]] = None,
    score_threshold: float = 0.05,
    topk_per_level: int = 1000,
    nms_iou_threshold: float = 0.5,
    max_detections: int = 300,
) -> List[Dict[str, torch.Tensor]]:
    """Detections of a batch, vectorised over images: one top-k per level, one NMS call in all.

    class_logits: (B, A, K); box_deltas: (B, A, 4); anchors: (A, 4), ordered by level as
    ``num_anchors_per_level``. image_sizes: per image (h, w) of the network input to clip boxes to
    (the padded size reproduces the original project; the unpadded size is tighter).
    image_scales: per image resize scale; boxes are divided by it to return to original image coordinates.
    Returns per image {"boxes": (D, 4), "scores": (D,), "labels": (D,) int64}, scores descending.
    """
    batch_size, _, num_classes = class_logits.shape
    device = class_logits.device
    # sigmoid is monotonic: select on logits and take the sigmoid of the few kept, not of all B*A*K.
    logit_threshold = torch.logit(torch.tensor(float(score_threshold), dtype=torch.float64)).item()

    cand_logits, cand_anchors, cand_labels = [], [], []
    start = 0
    for count in num_anchors_per_level:
        top_logits, anchor_idx, labels = level_topk(class_logits[:, start:start + count], topk_per_level)
        cand_logits.append(top_logits)
        cand_anchors.append(anchor_idx + start)
        cand_labels.append(labels)
        start += count
    cand_logits = torch.cat(cand_logits, dim=1)  # (B, N): every image has the same N candidates
    cand_anchors = torch.cat(cand_anchors, dim=1)
    cand_labels = torch.cat(cand_labels, dim=1)
    num_passing = (cand_logits > logit_threshold).sum(dim=1)  # (B,)

    num_candidates = CANDIDATES_PER_DETECTION * max_detections
    while True:
        image_idx, boxes, scores, labels = _nms_on_best_candidates(
            cand_logits, cand_anchors, cand_labels, num_candidates, logit_threshold, box_deltas, anchors,
            box_coder, image_sizes, num_classes, nms_iou_threshold)
        # An image short of max_detections whose candidates were cut may have lost survivors.
        kept_per_image = torch.bincount(image_idx, minlength=batch_size)
        if not ((kept_per_image < max_detections) & (num_passing > num_candidates)).any():
            break
        num_candidates *= 2

    if image_scales is not None:
        scales = torch.as_tensor(image_scales, dtype=boxes.dtype, device=device)
        boxes = boxes / scales[image_idx, None]

    # NMS returns detections by descending score; a stable sort by image keeps that order within each image.
    order = torch.sort(image_idx, stable=True).indices
    boxes, scores, labels = boxes[order], scores[order], labels[order]
    counts = kept_per_image.tolist()
    detections = []
    for image_boxes, image_scores, image_labels in zip(
        boxes.split(counts), scores.split(counts), labels.split(counts)
    ):
        detections.append(
            {
                "boxes": image_boxes[:max_detections],
                "scores": image_scores[:max_detections],
                "labels": image_labels[:max_detections],
            }
        )
    return detections


def _nms_on_best_candidates(
    cand_logits: torch.Tensor,
    cand_anchors: torch.Tensor,
    cand_labels: torch.Tensor,
    num_candidates: int,
    logit_threshold: float,
    box_deltas: torch.Tensor,
    anchors: torch.Tensor,
    box_coder: BoxCoder,
    image_sizes: Sequence[Tuple[int, int]],
    num_classes: int,
    nms_iou_threshold: float,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class-aware NMS of each image's best ``num_candidates`` candidates above the threshold, in one call.

    cand_*: (B, N) logits, anchor indices and labels. Returns image index (D,), boxes (D, 4), scores (D,)
    and labels (D,) of the survivors, by descending score.
    """
    if cand_logits.shape[1] > num_candidates:
        cand_logits, best = cand_logits.topk(num_candidates, dim=1, sorted=False)
        cand_anchors = cand_anchors.gather(1, best)
        cand_labels = cand_labels.gather(1, best)
    image_idx, column = torch.nonzero(cand_logits > logit_threshold, as_tuple=True)
    anchor_idx = cand_anchors[image_idx, column]
    labels = cand_labels[image_idx, column]
    scores = torch.sigmoid(cand_logits[image_idx, column].float())

    boxes = box_coder.decode(box_deltas[image_idx, anchor_idx].float(), anchors[anchor_idx])
    sizes = torch.as_tensor(image_sizes, dtype=boxes.dtype, device=boxes.device)  # (B, 2) h, w
    boxes = clip_boxes(boxes, sizes[image_idx, 0], sizes[image_idx, 1])

    # One NMS over the batch: each (image, class) pair is its own group.
    keep = batched_nms(boxes, scores, image_idx * num_classes + labels, nms_iou_threshold)
    return image_idx[keep], boxes[keep], scores[keep], labels[keep]
