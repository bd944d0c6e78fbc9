"""Small data and models the tests build for themselves (nothing is downloaded or committed)."""
import os

import cv2
import numpy as np
import torch

from retinanet.checkpoint import CHECKPOINT_FORMAT
from retinanet.model import RetinaNet

# (class, box) per image: squares of "a" (white) and discs of "b" (red) on a dark, noisy background.
TINY_IMAGES = [
    [("a", (10, 12, 50, 52)), ("b", (70, 30, 116, 76))],
    [("b", (8, 40, 48, 80))],
    [("a", (60, 8, 104, 52)), ("a", (12, 50, 48, 86))],
    [("b", (40, 20, 84, 64))],
]


def write_tiny_csv_dataset(folder, size=(96, 128), seed=0):
    """Four 96x128 JPEGs with drawn objects; returns (annotations csv, classes csv, boxes per image)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for index, objects in enumerate(TINY_IMAGES):
        image = rng.integers(0, 60, size=(*size, 3), dtype=np.uint8)
        for name, (x1, y1, x2, y2) in objects:
            if name == "a":
                cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), (255, 255, 255), -1)
            else:
                centre, axes = ((x1 + x2) // 2, (y1 + y2) // 2), ((x2 - x1) // 2, (y2 - y1) // 2)
                cv2.ellipse(image, centre, axes, 0, 0, 360, (30, 30, 230), -1)
        path = os.path.join(folder, f"image_{index}.jpg")
        cv2.imwrite(path, image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        lines += [f"{path},{x1},{y1},{x2},{y2},{name}" for name, (x1, y1, x2, y2) in objects]
    annotations = os.path.join(folder, "annotations.csv")
    with open(annotations, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    classes = os.path.join(folder, "classes.csv")
    with open(classes, "w") as handle:
        handle.write("a,0\nb,1\n")
    return annotations, classes


def save_model_checkpoint(path, model: RetinaNet, class_names):
    torch.save({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "class_names": list(class_names),
                "model_args": model.model_args()}, path)
