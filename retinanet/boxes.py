"""Box geometry shared by matching, post-processing and evaluation.

All boxes are ``x1y1x2y2`` in absolute pixels.
"""
import torch
from torchvision.ops import box_iou

__all__ = ["box_iou", "box_ioa", "batched_box_iou", "clip_boxes"]


def box_ioa(boxes: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Intersection over the area of each box in ``boxes``.

    boxes: (N, 4), regions: (M, 4) -> (N, M); how much of box n lies inside region m.
    Used for ignore regions, where IoU would penalise a small box inside a large region.
    """
    top_left = torch.max(boxes[:, None, :2], regions[None, :, :2])
    bottom_right = torch.min(boxes[:, None, 2:], regions[None, :, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    area = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(dim=1)
    return intersection / area.clamp(min=1e-6)[:, None]


def batched_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of every pair within each batch entry: boxes1 (B, N, 4), boxes2 (B, M, 4) -> (B, N, M).

    A box with no area (x2 <= x1 or y2 <= y1, padding for one) has IoU 0 with everything.
    """
    top_left = torch.max(boxes1[:, :, None, :2], boxes2[:, None, :, :2])
    bottom_right = torch.min(boxes1[:, :, None, 2:], boxes2[:, None, :, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(dim=3)
    area1 = (boxes1[..., 2:] - boxes1[..., :2]).clamp(min=0).prod(dim=2)
    area2 = (boxes2[..., 2:] - boxes2[..., :2]).clamp(min=0).prod(dim=2)
    union = area1[:, :, None] + area2[:, None, :] - intersection
    return intersection / union.clamp(min=1e-6)


def clip_boxes(boxes: torch.Tensor, height, width) -> torch.Tensor:
    """Clip (..., 4) boxes to [0, width] x [0, height]; height/width may be scalars or broadcastable tensors.

    x1, y1 are clamped at 0 and x2, y2 at the size only, as the original project does.
    """
    if not torch.is_tensor(width):
        width = torch.tensor(width, dtype=boxes.dtype, device=boxes.device)
    if not torch.is_tensor(height):
        height = torch.tensor(height, dtype=boxes.dtype, device=boxes.device)
    x1 = boxes[..., 0].clamp(min=0)
    y1 = boxes[..., 1].clamp(min=0)
    x2 = torch.minimum(boxes[..., 2], width.to(boxes.dtype))
    y2 = torch.minimum(boxes[..., 3], height.to(boxes.dtype))
    return torch.stack([x1, y1, x2, y2], dim=-1)
