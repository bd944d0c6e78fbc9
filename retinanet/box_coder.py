"""Encoding of boxes as deltas from anchors, and back.

The formula is torchvision's ``BoxCoder`` with weights (10, 10, 5, 5) = 1 / std; that class is
private API (``torchvision.models.detection._utils``) and lacks the original project's 1 px floor
on ground-truth sides, which keeps log() finite for degenerate boxes, so it is written here.
"""
import math
from typing import Sequence

import torch


class BoxCoder:
    """(dx, dy, dw, dh) deltas relative to the anchor's centre and size, divided by ``std``.

    encode: dx = (gx - ax) / aw / std_x, dw = log(gw / aw) / std_w (same for y/h)
    decode: gx = ax + dx * std_x * aw, gw = aw * exp(dw * std_w)
    The mean is 0, as in the published pytorch-retinanet checkpoint.
    """

    # exp(dw) larger than 1000/16 would turn the smallest (16 px) feature into a box wider than any
    # image; clamping keeps a wild prediction from overflowing to inf during early training.
    max_log_scale = math.log(1000.0 / 16)

    def __init__(self, std: Sequence[float] = (0.1, 0.1, 0.2, 0.2)):
        self.std = tuple(float(s) for s in std)

    def encode(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """boxes, anchors: (..., 4) x1y1x2y2 -> deltas (..., 4)."""
        anchor_w = anchors[..., 2] - anchors[..., 0]
        anchor_h = anchors[..., 3] - anchors[..., 1]
        anchor_x = anchors[..., 0] + 0.5 * anchor_w
        anchor_y = anchors[..., 1] + 0.5 * anchor_h
        # Width/height at least 1 px so log() stays finite for degenerate boxes (as the original).
        box_w = (boxes[..., 2] - boxes[..., 0]).clamp(min=1)
        box_h = (boxes[..., 3] - boxes[..., 1]).clamp(min=1)
        box_x = boxes[..., 0] + 0.5 * (boxes[..., 2] - boxes[..., 0])
        box_y = boxes[..., 1] + 0.5 * (boxes[..., 3] - boxes[..., 1])
        deltas = torch.stack(
            [
                (box_x - anchor_x) / anchor_w,
                (box_y - anchor_y) / anchor_h,
                torch.log(box_w / anchor_w),
                torch.log(box_h / anchor_h),
            ],
            dim=-1,
        )
        return deltas / deltas.new_tensor(self.std)

    def decode(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """deltas, anchors: (..., 4) (broadcastable) -> boxes (..., 4) x1y1x2y2."""
        deltas = deltas * deltas.new_tensor(self.std)
        anchor_w = anchors[..., 2] - anchors[..., 0]
        anchor_h = anchors[..., 3] - anchors[..., 1]
        anchor_x = anchors[..., 0] + 0.5 * anchor_w
        anchor_y = anchors[..., 1] + 0.5 * anchor_h
        x = anchor_x + deltas[..., 0] * anchor_w
        y = anchor_y + deltas[..., 1] * anchor_h
        w = anchor_w * torch.exp(deltas[..., 2].clamp(max=self.max_log_scale))
        h = anchor_h * torch.exp(deltas[..., 3].clamp(max=self.max_log_scale))
        return torch.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], dim=-1)


# Where a person's head sits in its full-body box, roughly (CrowdHuman's people and the synthetic
# crowds'): centred across, its centre 0.4 box heights above the box centre, 0.35 of the box's width
# and 0.2 of its height. A triplet model regresses the head from this head-sized box at the top of
# the anchor rather than from the anchor itself, so that its deltas measure head-sized errors: from
# the whole anchor, a centre off by a tenth of the anchor is a tenth of a body but half a head.
HEAD_PRIOR = (0.0, -0.4, 0.35, 0.2)


def reference_boxes(anchors: torch.Tensor, boxes_per_anchor: int) -> torch.Tensor:
    """The box each regressed box is encoded from: anchors (..., 4) -> (..., S, 4).

    S = 1: the anchor. S = 3 (person triplets: full, visible, head): the anchor for the full and
    visible bodies, the ``HEAD_PRIOR`` box inside it for the head.
    """
    if boxes_per_anchor == 1:
        return anchors[..., None, :]
    if boxes_per_anchor != 3:
        raise ValueError(f"{boxes_per_anchor} boxes per anchor: 1 (plain) or 3 (person triplets)")
    width = anchors[..., 2] - anchors[..., 0]
    height = anchors[..., 3] - anchors[..., 1]
    dx, dy, fw, fh = HEAD_PRIOR
    x = anchors[..., 0] + (0.5 + dx) * width
    y = anchors[..., 1] + (0.5 + dy) * height
    head = torch.stack([x - 0.5 * fw * width, y - 0.5 * fh * height, x + 0.5 * fw * width, y + 0.5 * fh * height],
                       dim=-1)
    return torch.stack([anchors, anchors, head], dim=-2)
