"""Drawing boxes on images: per-class colours, captions with scores, hatched ignore regions, side by side.

Every function takes and returns (H, W, 3) uint8 RGB images and never modifies its input.
"""
import os
import sys
from typing import Dict, Optional, Sequence

import cv2
import numpy as np

from retinanet.errors import UserError
from retinanet.io_utils import atomic_open

# Hues one golden-ratio turn apart never repeat and keep neighbouring class indices far apart.
_GOLDEN_RATIO_CONJUGATE = 0.618033988749895
IGNORE_COLOUR = (160, 160, 160)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_colours(num_classes: int) -> np.ndarray:
    """(K, 3) uint8 RGB, one saturated colour per class, the same for every image and run."""
    hues = (np.arange(num_classes) * _GOLDEN_RATIO_CONJUGATE) % 1.0
    # OpenCV's 8-bit HSV stores hue in [0, 180).
    hsv = np.stack([hues * 180, np.full(num_classes, 220), np.full(num_classes, 255)], axis=1)
    return cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0]


def line_thickness(image: np.ndarray) -> int:
    """Box line width in pixels: 1 up to ~400 px images, growing with the short side so lines stay visible."""
    return max(1, int(round(min(image.shape[:2]) / 400)))


def _text_colour(background: Sequence[int]) -> "tuple[int, int, int]":
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def _caption(image: np.ndarray, text: str, x: int, y: int, colour: Sequence[int], thickness: int) -> None:
    """Write ``text`` on a filled box of ``colour`` just above (x, y), or just below when at the top edge."""
    scale = 0.4 * thickness
    (width, height), baseline = cv2.getTextSize(text, _FONT, scale, 1)
    top = y - height - baseline - 2 if y - height - baseline - 2 >= 0 else y
    fill = tuple(int(c) for c in colour)
    cv2.rectangle(image, (x, top), (x + width + 2, top + height + baseline + 2), fill, -1)
    cv2.putText(image, text, (x + 1, top + height + 1), _FONT, scale, _text_colour(colour), 1, cv2.LINE_AA)


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    scores: Optional[np.ndarray] = None,
    colours: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Draw boxes coloured by class with a ``name`` (ground truth) or ``name 0.87`` (detection) caption.

    image: (H, W, 3) uint8 RGB; boxes: (N, 4) x1y1x2y2 pixels of ``image``; labels: (N,) class
    indices; scores: (N,) or None; colours: (K, 3) uint8 RGB, default ``class_colours``.
    Lower scores are drawn first so the most confident boxes and captions stay on top.
    """
    image = image.copy()
    colours = class_colours(len(class_names)) if colours is None else colours
    thickness = line_thickness(image)
    order = np.argsort(scores, kind="stable") if scores is not None else np.arange(len(labels))
    corners = _pixel_corners(boxes, image)
    for i in order:
        x1, y1, x2, y2 = corners[i].tolist()
        label = int(labels[i])
        colour = tuple(int(c) for c in colours[label])
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, thickness)
        text = class_names[label] if scores is None else f"{class_names[label]} {float(scores[i]):.2f}"
        _caption(image, text, x1, y1, colour, thickness)
    return image


def draw_people(
    image: np.ndarray,
    full: np.ndarray,
    visible: np.ndarray,
    head: np.ndarray,
    scores: Optional[np.ndarray] = None,
    name: str = "person",
) -> np.ndarray:
    """Draw each person's full-body, visible-body and head boxes in one colour of its own.

    full, visible, head: (N, 4) x1y1x2y2 pixels of ``image``, row n the same person; scores: (N,) or
    None (ground truth). The full body is drawn solid with the caption, the visible body with a thin
    line inside it, the head solid: people standing one behind the other stay told apart by colour.
    Lower scores are drawn first.
    """
    image = image.copy()
    if len(full) == 0:
        return image
    colours = class_colours(len(full))
    thickness = line_thickness(image)
    order = np.argsort(scores, kind="stable") if scores is not None else np.arange(len(full))
    corners = [_pixel_corners(boxes, image) for boxes in (full, visible, head)]
    for i in order.tolist():
        colour = tuple(int(c) for c in colours[i])
        for kind, width in zip(corners, (thickness, max(1, thickness // 2), thickness)):
            x1, y1, x2, y2 = kind[i].tolist()
            cv2.rectangle(image, (x1, y1), (x2, y2), colour, width)
        text = name if scores is None else f"{name} {float(scores[i]):.2f}"
        _caption(image, text, int(corners[0][i, 0]), int(corners[0][i, 1]), colour, thickness)
    return image


def _pixel_corners(boxes: np.ndarray, image: np.ndarray) -> np.ndarray:
    """(N, 4) boxes -> int corners inside the image (a line at x = W or y = H would fall outside it)."""
    corners = np.round(np.asarray(boxes, dtype=np.float64)).astype(np.int64).reshape(-1, 4)
    corners[:, 0::2] = corners[:, 0::2].clip(0, image.shape[1] - 1)
    corners[:, 1::2] = corners[:, 1::2].clip(0, image.shape[0] - 1)
    return corners


def draw_ignore_regions(
    image: np.ndarray,
    regions: np.ndarray,
    region_labels: Optional[np.ndarray] = None,
    class_names: Optional[Sequence[str]] = None,
    colour: Sequence[int] = IGNORE_COLOUR,
) -> np.ndarray:
    """Hatch ignore regions with diagonal stripes inside a dashed border, captioned ``ignore [class]``.

    regions: (M, 4) x1y1x2y2; region_labels: (M,) class index, -1 = every class.
    Hatching (not a solid fill) keeps the people inside a region visible.
    """
    image = image.copy()
    height, width = image.shape[:2]
    thickness = line_thickness(image)
    dash, spacing = 6 * thickness, 8 * thickness
    colour_array = np.asarray(colour, dtype=np.float32)
    corners = np.round(np.asarray(regions, dtype=np.float64)).astype(np.int64).reshape(-1, 4)
    corners[:, 0::2] = corners[:, 0::2].clip(0, width)
    corners[:, 1::2] = corners[:, 1::2].clip(0, height)
    for m, (x1, y1, x2, y2) in enumerate(corners.tolist()):
        if x2 <= x1 or y2 <= y1:
            continue
        crop = image[y1:y2, x1:x2]  # a view: writes land in ``image``
        yy, xx = np.ogrid[: y2 - y1, : x2 - x1]
        border = ((yy < thickness) | (yy >= y2 - y1 - thickness)
                  | (xx < thickness) | (xx >= x2 - x1 - thickness))
        dashes = border & (((xx + yy) // dash) % 2 == 0)
        stripes = ~border & (((xx + yy) % spacing) < thickness)
        crop[stripes] = (0.5 * crop[stripes] + 0.5 * colour_array).astype(np.uint8)
        crop[dashes] = colour_array.astype(np.uint8)
        label = -1 if region_labels is None else int(region_labels[m])
        text = "ignore" if label < 0 or class_names is None else f"ignore {class_names[label]}"
        _caption(image, text, x1, y1, colour, thickness)
    return image


def draw_annotation(image: np.ndarray, annotation: Dict[str, np.ndarray], class_names: Sequence[str],
                    colours: Optional[np.ndarray] = None) -> np.ndarray:
    """Ground truth: ignore regions first, then boxes (person triplets: ``draw_people``). annotation as
    ``DetectionDataset.annotations``."""
    image = draw_ignore_regions(image, annotation["ignore"], annotation["ignore_labels"], class_names)
    if "head_boxes" in annotation:
        # the rows of class head, when there are, repeat the people's own heads
        people = np.asarray(annotation["labels"]) == 0
        return draw_people(image, annotation["boxes"][people], annotation["visible_boxes"][people],
                           annotation["head_boxes"][people], name=class_names[0])
    return draw_boxes(image, annotation["boxes"], annotation["labels"], class_names, colours=colours)


def draw_detections(image: np.ndarray, detections: Dict[str, np.ndarray], class_names: Sequence[str],
                    colours: Optional[np.ndarray] = None) -> np.ndarray:
    """detections: {"boxes": (D, 4), "scores": (D,), "labels": (D,)} in pixels of ``image``; a person-triplet
    model's also "visible_boxes" and "head_boxes", drawn per person (``draw_people``); its head
    detections (class 1) that are no person's head are drawn as boxes."""
    if "head_boxes" in detections:
        labels = np.asarray(detections["labels"])
        people = labels == 0
        heads = np.asarray(detections["boxes"])[~people]
        taken = (heads[:, None, :] == np.asarray(detections["head_boxes"])[people][None]).all(axis=2).any(axis=1)
        lone = np.flatnonzero(~people)[~taken]
        if len(lone):
            image = draw_boxes(image, detections["boxes"][lone], labels[lone], class_names, detections["scores"][lone],
                               colours)
        return draw_people(image, detections["boxes"][people], detections["visible_boxes"][people],
                           detections["head_boxes"][people], detections["scores"][people], class_names[0])
    return draw_boxes(image, detections["boxes"], detections["labels"], class_names, detections["scores"],
                      colours)


def select_detections(
    detections: Dict[str, np.ndarray], score_threshold: float, classes: Optional[Sequence[int]] = None
) -> Dict[str, np.ndarray]:
    """Detections scoring at least ``score_threshold`` whose label is in ``classes`` (None: all)."""
    keep = detections["scores"] >= score_threshold
    if classes is not None:
        keep &= np.isin(detections["labels"], np.asarray(classes, dtype=np.int64))
    return {key: value[keep] for key, value in detections.items()}


def _title_bar(width: int, text: str, height: int) -> np.ndarray:
    """(height, width, 3) white bar with ``text`` in black, shrunk to fit the width."""
    bar = np.full((height, width, 3), 255, dtype=np.uint8)
    (text_width, _), _ = cv2.getTextSize(text, _FONT, 1.0, 1)
    scale = min(height / 40, (width - 8) / max(text_width, 1))
    cv2.putText(bar, text, (4, int(height * 0.7)), _FONT, scale, (0, 0, 0), max(1, height // 24), cv2.LINE_AA)
    return bar


def side_by_side(left: np.ndarray, right: np.ndarray, left_title: str, right_title: str) -> np.ndarray:
    """Two same-sized images side by side under title bars, a white gap between: (H + bar, 2W + gap, 3)."""
    height, width = left.shape[:2]
    bar_height = max(20, min(height, width) // 16)
    gap = np.full((height + bar_height, max(4, width // 100), 3), 255, dtype=np.uint8)
    halves = [np.concatenate([_title_bar(width, title, bar_height), half])
              for half, title in ((left, left_title), (right, right_title))]
    return np.concatenate([halves[0], gap, halves[1]], axis=1)


def write_image(path: "str | os.PathLike", image: np.ndarray, jpeg_quality: int = 95) -> None:
    """Encode an RGB image by the extension of ``path`` (jpg, png, bmp, webp, ...) and write it atomically."""
    path = os.fspath(path)
    extension = os.path.splitext(path)[1].lower()
    try:
        ok, encoded = cv2.imencode(extension, cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    except cv2.error:
        ok = False
    if not ok:
        raise UserError(f"{path}: OpenCV cannot write images with the extension {extension!r}")
    with atomic_open(path, "wb") as handle:
        handle.write(encoded.tobytes())


def display_available() -> bool:
    """Whether a window can be opened: Windows and macOS always, elsewhere when X11 or Wayland is set."""
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def show_image(image: np.ndarray, title: str) -> bool:
    """Show ``image`` in a window and wait until it is closed; False when no interactive backend exists.

    Matplotlib rather than cv2.imshow: the headless OpenCV wheel this project installs has no GUI.
    """
    if not display_available():
        return False
    import matplotlib.pyplot as plt

    if plt.get_backend().lower() == "agg":
        return False
    figure = plt.figure(title)
    plt.imshow(image)
    plt.axis("off")
    plt.show()
    plt.close(figure)
    return True
