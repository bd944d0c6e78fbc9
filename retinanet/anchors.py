"""Anchor boxes of the pytorch-retinanet convention.

Levels P3..P7 (strides 8..128, base sizes 32..512); 9 anchors per location,
ratio-major: for each ratio r in (0.5, 1, 2), for each scale s in (2^0, 2^1/3, 2^2/3),
width w = sqrt((base * s)^2 / r), height h = w * r. The feature map of level l is
ceil(H / 2^l) x ceil(W / 2^l) and its anchor centres are ((x + 0.5) * stride, (y + 0.5) * stride).
Flattened order: level, then row y, column x, then anchor — the order of the heads' outputs.

torchvision's ``AnchorGenerator`` is not used: it centres anchors at ``x * stride`` and rounds
its cell anchors, so the published checkpoint's boxes would all move.
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
    """Anchors of each pyramid level, from the level's feature map size.

    ``level_anchors(features)`` -> per level (H_l * W_l * 9, 4) float32 x1y1x2y2, the order of the
    heads' outputs; ``anchors((H, W), device)`` -> all levels of a padded input concatenated.
    Eager calls are cached by size and device. Under tracing (export) the grids are built from the
    feature maps' traced sizes instead, so the graph accepts any image size.
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
        self._cache: Dict[tuple, Tuple[torch.Tensor, List[torch.Tensor]]] = {}

    def feature_sizes(self, image_size: Tuple[int, int]) -> List[Tuple[int, int]]:
        height, width = image_size
        return [(math.ceil(height / s), math.ceil(width / s)) for s in self.strides]

    def num_anchors_per_level(self, image_size: Tuple[int, int]) -> List[int]:
        return [h * w * self.num_anchors_per_location for h, w in self.feature_sizes(image_size)]

    def __call__(self, image_size: Tuple[int, int], device: torch.device) -> torch.Tensor:
        """All anchors of a padded (H, W) input: (sum_l ceil(H/s_l) * ceil(W/s_l) * 9, 4) float32."""
        return self._cached(self.feature_sizes(image_size), torch.device(device))[0]

    def level_anchors(self, features: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """features: per level (B, C, H_l, W_l) -> per level anchors (H_l * W_l * 9, 4) float32."""
        device = features[0].device
        if torch.jit.is_tracing():
            return [self._grid(level, feature.shape[-2], feature.shape[-1], device)
                    for level, feature in enumerate(features)]
        return self._cached([tuple(feature.shape[-2:]) for feature in features], device)[1]

    def all_anchors(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """features: per level (B, C, H_l, W_l) -> every level's anchors concatenated (sum_l H_l W_l 9, 4),
        cached (training, which is never traced, uses this: no concatenation per step)."""
        return self._cached([tuple(feature.shape[-2:]) for feature in features], features[0].device)[0]

    def _cached(
        self, feature_sizes: Sequence[Tuple[int, int]], device: torch.device
    ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """(all anchors, per level views of them) for these feature map sizes."""
        key = (*((int(h), int(w)) for h, w in feature_sizes), str(device))
        entry = self._cache.get(key)
        if entry is None:
            # Ordinary tensors even when first asked for under inference_mode, so that training can use them.
            with torch.inference_mode(False):
                levels = [self._grid(level, h, w, device) for level, (h, w) in enumerate(feature_sizes)]
                anchors = torch.cat(levels)
            entry = (anchors, list(anchors.split([len(level) for level in levels])))
            self._cache[key] = entry
        return entry

    def _grid(self, level: int, height, width, device: torch.device) -> torch.Tensor:
        """(height * width * 9, 4) anchors of one level, location-major; height/width may be traced sizes."""
        stride = self.strides[level]
        # float64 then float32, so that every anchor is the correctly rounded value of its formula.
        options = {"dtype": torch.float64, "device": device}
        shift_x = (torch.arange(width, **options) + 0.5) * stride
        shift_y = (torch.arange(height, **options) + 0.5) * stride
        shift_y, shift_x = torch.meshgrid(shift_y, shift_x, indexing="ij")
        shifts = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=-1).reshape(-1, 1, 4)  # (HW, 1, 4)
        cell = self.cell_anchors[level].to(device)
        return (shifts + cell[None]).reshape(-1, 4).to(torch.float32)
