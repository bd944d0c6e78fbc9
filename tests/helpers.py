"""Small data and models the tests build for themselves (nothing is downloaded or committed)."""
import contextlib
import json
import os

import cv2
import numpy as np
import torch

from retinanet.checkpoint import CHECKPOINT_FORMAT
from retinanet.evaluation.person_triplets import read_people_ground_truth
from retinanet.model import RetinaNet


def tiny_layout(num_images=8, size=(128, 160), seed=0):
    """Per image a list of (class, (x1, y1, x2, y2)): 4-6 objects of 34-40 px, one per cell of a 3x4 grid."""
    rng = np.random.default_rng(seed)
    height, width = size
    cell_h, cell_w = height // 3, width // 4
    layout = []
    for _ in range(num_images):
        cells = rng.permutation(12)[: rng.integers(4, 7)]
        objects = []
        for cell in cells:
            row, column = divmod(int(cell), 4)
            side = int(rng.integers(34, 41))
            x1 = column * cell_w + int(rng.integers(0, cell_w - side + 1))
            y1 = row * cell_h + int(rng.integers(0, cell_h - side + 1))
            objects.append(("a" if rng.random() < 0.5 else "b", (x1, y1, x1 + side, y1 + side)))
        layout.append(objects)
    return layout


# (class, box) per 96x128 image: few objects, for tests that check outputs box by box.
TINY_IMAGES = [
    [("a", (10, 12, 50, 52)), ("b", (70, 30, 116, 76))],
    [("b", (8, 40, 48, 80))],
    [("a", (60, 8, 104, 52)), ("a", (12, 50, 48, 86))],
    [("b", (40, 20, 84, 64))],
]
# Eight 128x160 images with 4-6 objects each: enough signal for a model to learn in a few dozen steps.
DENSE_IMAGES = tiny_layout()


def write_tiny_csv_dataset(folder, size=(96, 128), seed=0, images=None):
    """JPEGs with drawn objects: class "a" white squares, class "b" red discs, on a dark noisy background.

    Returns (annotations csv, classes csv); the boxes are ``images`` (default ``TINY_IMAGES``).
    """
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for index, objects in enumerate(TINY_IMAGES if images is None else images):
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


def train_argv(data, output_dir, *extra):
    """train.py's flags for a fast, deterministic CPU run on ``data`` = (annotations csv, classes csv)."""
    annotations, classes = data
    return ["--dataset", "csv", "--csv_train", str(annotations), "--csv_classes", str(classes),
            "--depth", "18", "--feature_size", "32", "--no_pretrained", "--min_side", "128", "--max_side", "160",
            "--workers", "0", "--device", "cpu", "--output_dir", str(output_dir), "--flip_prob", "0.5",
            "--optimizer", "adam", "--lr", "1e-3", "--warmup_iters", "2", "--clip_grad_norm", "0", *extra]


def save_model_checkpoint(path, model: RetinaNet, class_names):
    torch.save({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "class_names": list(class_names),
                "model_args": model.model_args()}, path)


@contextlib.contextmanager
def logical_order(model: torch.nn.Module):
    """In-place random fills inside (``normal_``, ``reset_parameters``) draw the values they would in a
    contiguous model: they walk memory, and the model's conv weights are channels-last."""
    model.to(memory_format=torch.contiguous_format)
    try:
        yield
    finally:
        model.to(memory_format=torch.channels_last)


def spread_model(**kwargs) -> RetinaNet:
    """A random ResNet-18 RetinaNet whose scores spread over (0.1, 0.7) and whose boxes vary.

    The stock initialisation gives every anchor the prior score 0.01 (zero output weights), so any
    two kernels' rounding would reorder them; random heads make the outputs look like a trained model's.
    """
    torch.manual_seed(0)
    model = RetinaNet(num_classes=2, depth=18, feature_size=16, **kwargs).eval()
    randomise_heads(model, class_bias=-1.0)
    return model


def randomise_heads(model: RetinaNet, class_bias: float) -> None:
    """Random heads over an FPN at PyTorch's default conv initialisation (smaller than He's): N(0, 0.1)
    classification convs, N(0, 0.01) hidden box convs and N(0, 0.5) box outputs, so that scores vary
    without saturating and boxes vary without flying off the image. Also used by benchmarks/bench_memory.py."""
    head = model.classificationModel
    with torch.no_grad(), logical_order(model):
        for conv in model.fpn.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.reset_parameters()
        boxes = model.regressionModel
        for conv in (boxes.conv1, boxes.conv2, boxes.conv3, boxes.conv4):
            conv.weight.normal_(0, 0.01)
        for conv in (head.conv1, head.conv2, head.conv3, head.conv4, head.output):
            conv.weight.normal_(0, 0.1)
        head.output.bias.fill_(class_bias)
        boxes.output.weight.normal_(0, 0.5)


def person_gtbox(fbox, vbox, hbox=None, **flags) -> dict:
    """An odgt ``person`` gtbox (boxes [x, y, w, h]); no ``hbox`` key when hbox is None."""
    gtbox = {"tag": "person", "fbox": fbox, "vbox": vbox, **flags}
    if hbox is not None:
        gtbox["hbox"] = hbox
    return gtbox


def xywh_to_corners(box) -> list:
    """[x, y, w, h] -> [x1, y1, x2, y2], written here so that tests do not lean on the library's conversion."""
    return [box[0], box[1], box[0] + box[2], box[1] + box[3]]


def one_image_people(tmp_path, people, height: int = 120, width: int = 200):
    """Write one image (id "a") with the gtboxes ``people`` as ``tmp_path/gt.odgt`` and read it back with
    ``read_people_ground_truth``."""
    odgt = tmp_path / "gt.odgt"
    odgt.write_text(json.dumps({"ID": "a", "height": height, "width": width, "gtboxes": people}) + "\n")
    return read_people_ground_truth(str(odgt))
