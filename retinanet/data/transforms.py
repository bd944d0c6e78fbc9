"""The one place that turns a decoded image and its boxes into network input."""
import cv2
import numpy as np
import torch

from retinanet.errors import UserError

# Normalisation the ImageNet-pretrained backbone and the published COCO checkpoint were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_scale(height: int, width: int, min_side: int, max_side: int) -> float:
    """Scale that brings the short side to ``min_side`` unless the long side would pass ``max_side``.

    In that case the long side becomes ``max_side`` instead (the pytorch-retinanet rule).
    """
    scale = min_side / min(height, width)
    if max(height, width) * scale > max_side:
        scale = max_side / max(height, width)
    return scale


def _as_boxes(boxes: "np.ndarray | None", name: str) -> np.ndarray:
    if boxes is None:
        return np.zeros((0, 4), np.float32)
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4), got {boxes.shape}")
    return boxes


class Transform:
    """Resize, optionally flip, and normalise one image together with its boxes.

    Args:
        min_side: target length of the image's short side, in pixels.
        max_side: cap on the long side; wins over ``min_side`` when both cannot hold.
        flip_prob: probability of a horizontal flip (training augmentation). The draw uses
            torch's global generator, which DataLoader seeds differently in every worker.

    The output is not padded: ``collate_batch`` pads a whole batch at once.
    """

    def __init__(self, min_side: int = 608, max_side: int = 1024, flip_prob: float = 0.0):
        if min_side <= 0 or max_side <= 0:
            raise UserError(f"image sides must be positive, got min_side={min_side}, max_side={max_side}")
        if not 0.0 <= flip_prob <= 1.0:
            raise UserError(f"flip probability must be in [0, 1], got {flip_prob}")
        self.min_side = int(min_side)
        self.max_side = int(max_side)
        self.flip_prob = float(flip_prob)
        # uint8 value -> normalised float32, per RGB channel: normalising is then one table look-up
        # per pixel (cv2.LUT), written straight into the channel-first output without float temporaries.
        values = np.arange(256, dtype=np.float64) / 255.0
        self._lut_per_channel = [
            ((values - mean) / std).astype(np.float32).reshape(1, 256)
            for mean, std in zip(IMAGENET_MEAN, IMAGENET_STD)
        ]

    def __repr__(self) -> str:
        return f"Transform(min_side={self.min_side}, max_side={self.max_side}, flip_prob={self.flip_prob})"

    def __call__(
        self, image: np.ndarray, boxes: "np.ndarray | None" = None, ignore: "np.ndarray | None" = None
    ) -> "tuple[torch.Tensor, np.ndarray, np.ndarray, float]":
        """Transform one image and its boxes alike.

        Args:
            image: (H, W, 3) uint8 RGB.
            boxes: (N, 4) x1y1x2y2 pixels of ``image``, or None for no boxes.
            ignore: (M, 4) x1y1x2y2 ignore regions, or None.

        Returns:
            image: (3, h, w) float32 tensor, RGB normalised with ImageNet mean/std.
            boxes: (N, 4) float32 numpy, in pixels of the resized (and maybe flipped) image.
            ignore: (M, 4) float32 numpy, likewise.
            scale: resized / original size; divide predicted boxes by it to return to ``image``.
        """
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        boxes = _as_boxes(boxes, "boxes")
        ignore = _as_boxes(ignore, "ignore")
        height, width = image.shape[:2]
        scale = resize_scale(height, width, self.min_side, self.max_side)
        new_height, new_width = int(round(height * scale)), int(round(width * scale))
        if (new_height, new_width) != (height, width):
            image = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_LINEAR)
        boxes = boxes * np.float32(scale)
        ignore = ignore * np.float32(scale)

        if self.flip_prob > 0 and torch.rand(()).item() < self.flip_prob:
            image = cv2.flip(image, 1)
            boxes = self._flip_boxes(boxes, new_width)
            ignore = self._flip_boxes(ignore, new_width)

        normalised = np.empty((3, new_height, new_width), dtype=np.float32)
        for channel, plane in enumerate(cv2.split(image)):
            cv2.LUT(plane, self._lut_per_channel[channel], dst=normalised[channel])
        return torch.from_numpy(normalised), boxes, ignore, scale

    @staticmethod
    def _flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
        """Mirror (N, 4) x1y1x2y2 boxes in an image ``width`` pixels wide: x -> width - x, x1/x2 swap."""
        flipped = boxes.copy()
        flipped[:, 0] = width - boxes[:, 2]
        flipped[:, 2] = width - boxes[:, 0]
        return flipped
