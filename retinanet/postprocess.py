"""From raw head outputs to detections: score filter, top-k per level, decode, clip, NMS."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torchvision.ops import batched_nms

from retinanet.box_coder import BoxCoder
from retinanet.boxes import clip_boxes


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

    image_idx, anchor_idx, class_idx, kept_scores = [], [], [], []
    start = 0
    for count in num_anchors_per_level:
        logits = class_logits[:, start:start + count].reshape(batch_size, -1)  # (B, A_l * K)
        k = min(topk_per_level, logits.shape[1])
        top_logits, top_flat = logits.topk(k, dim=1, sorted=False)  # (B, k)
        keep = top_logits > logit_threshold
        rows = torch.arange(batch_size, device=device)[:, None].expand(-1, k)[keep]
        flat = top_flat[keep]
        image_idx.append(rows)
        anchor_idx.append(flat // num_classes + start)
        class_idx.append(flat % num_classes)
        kept_scores.append(torch.sigmoid(top_logits[keep].float()))
        start += count
    image_idx = torch.cat(image_idx)
    anchor_idx = torch.cat(anchor_idx)
    labels = torch.cat(class_idx)
    scores = torch.cat(kept_scores)

    boxes = box_coder.decode(box_deltas[image_idx, anchor_idx].float(), anchors[anchor_idx])
    sizes = torch.as_tensor(image_sizes, dtype=boxes.dtype, device=device)  # (B, 2) h, w
    boxes = clip_boxes(boxes, sizes[image_idx, 0], sizes[image_idx, 1])

    # One NMS over the batch: each (image, class) pair is its own group.
    keep = batched_nms(boxes, scores, image_idx * num_classes + labels, nms_iou_threshold)
    image_idx, boxes, scores, labels = image_idx[keep], boxes[keep], scores[keep], labels[keep]

    if image_scales is not None:
        scales = torch.as_tensor(image_scales, dtype=boxes.dtype, device=device)
        boxes = boxes / scales[image_idx, None]

    # keep is sorted by score; a stable sort by image keeps that order within each image.
    order = torch.sort(image_idx, stable=True).indices
    image_idx, boxes, scores, labels = image_idx[order], boxes[order], scores[order], labels[order]
    counts = torch.bincount(image_idx, minlength=batch_size).tolist()
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

