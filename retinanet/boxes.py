"""Box geometry shared by matching, post-processing and evaluation.

All boxes are ``x1y1x2y2`` in absolute pixels.
"""
import torch
from torchvision.ops import box_iou

__all__ = ["box_iou", "box_ioa", "clip_boxes"]


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
