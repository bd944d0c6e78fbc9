"""Anchor boxes of the pytorch-retinanet convention.

Levels P3..P7 (strides 8..128, base sizes 32..512); 9 anchors per location,
ratio-major: for each ratio r in (0.5, 1, 2), for each scale s in (2^0, 2^1/3, 2^2/3),
width w = sqrt((base * s)^2 / r), height h = w * r. The feature map of level l is
ceil(H / 2^l) x ceil(W / 2^l) and its anchor centres are ((x + 0.5) * stride, (y + 0.5) * stride).
Flattened order: level, then row y, column x, then anchor — the order of the heads' outputs.
"""
import math
from typing import Dict, List, Sequence, Tuple

import torch

PYRAMID_LEVELS = (3, 4, 5, 6, 7)
RATIOS = (0.5, 1.0, 2.0)
SCALES = (2.0 ** 0.0, 2.0 ** (1.0 / 3.0), 2.0 ** (2.0 / 3.0))


def cell_anchors(base_size: float, ratios: Sequence[float] = RATIOS, scales: Sequence[float] = SCALES) -> torch.Tensor:
    """Anchors centred on (0, 0): (len(ratios) * len(scales), 4) x1y1x2y2, ratio-major, float64."""
    ratio = torch.tensor(ratios, dtype=torch.float64).repeat_interleave(len(scales))
    scale = torch.tensor(scales, dtype=torch.float64).repeat(len(ratios))
    widths = torch.sqrt((base_size * scale) ** 2 / ratio)
    heights = widths * ratio
    return torch.stack([-widths / 2, -heights / 2, widths / 2, heights / 2], dim=1)


class AnchorGenerator:
    """Anchors for a padded input size, computed on the requested device and cached.

    ``anchors((H, W), device)`` -> (sum_l ceil(H/s_l) * ceil(W/s_l) * 9, 4) float32 x1y1x2y2.
    """

    def __init__(
        self,
        pyramid_levels: Sequence[int] = PYRAMID_LEVELS,
        ratios: Sequence[float] = RATIOS,
        scales: Sequence[float] = SCALES,
    ):
        self.strides = [2 ** level for level in pyramid_levels]
        self.sizes = [2 ** (level + 2) for level in pyramid_levels]
        self.cell_anchors = [cell_anchors(size, ratios, scales) for size in self.sizes]
        self.num_anchors_per_location = len(ratios) * len(scales)
        self._cache: Dict[Tuple[int, int, str], torch.Tensor] = {}

    def feature_sizes(self, image_size: Tuple[int, int]) -> List[Tuple[int, int]]:
        height, width = image_size
        return [(math.ceil(height / s), math.ceil(width / s)) for s in self.strides]

    def num_anchors_per_level(self, image_size: Tuple[int, int]) -> List[int]:
        return [h * w * self.num_anchors_per_location for h, w in self.feature_sizes(image_size)]

    def __call__(self, image_size: Tuple[int, int], device: torch.device) -> torch.Tensor:
        key = (int(image_size[0]), int(image_size[1]), str(device))
        anchors = self._cache.get(key)
        if anchors is None:
            anchors = self._compute(key[:2]).to(device)
            self._cache[key] = anchors
        return anchors

    def _compute(self, image_size: Tuple[int, int]) -> torch.Tensor:
        per_level = []
        for (height, width), stride, cell in zip(self.feature_sizes(image_size), self.strides, self.cell_anchors):
            shift_x = (torch.arange(width, dtype=torch.float64) + 0.5) * stride
            shift_y = (torch.arange(height, dtype=torch.float64) + 0.5) * stride
            shift_y, shift_x = torch.meshgrid(shift_y, shift_x, indexing="ij")
            shifts = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=-1).reshape(-1, 1, 4)  # (HW, 1, 4)
            per_level.append((shifts + cell[None]).reshape(-1, 4))  # (HW * A, 4), location-major
        return torch.cat(per_level).to(torch.float32)
