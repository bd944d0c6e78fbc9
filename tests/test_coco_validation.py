"""coco_validation.py on a tiny COCO-layout set written here: model run, perfect detections, errors."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import coco_validation
from retinanet.evaluation import COCO_METRIC_NAMES, evaluate_coco
from retinanet.model import RetinaNet
from retinanet.precision import resolve_precision
from tests.helpers import TINY_IMAGES, save_model_checkpoint, write_tiny_csv_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Non-contiguous ids, as in COCO itself: results must carry these, not dataset indices.
IMAGE_IDS = [42, 7, 100, 5]
CATEGORY_IDS = {"a": 3, "b": 7}
CROWD_REGION = [100, 60, 20, 20]  # an iscrowd "b" region in the empty corner of image 42


def run(*argv):
    return coco_validation.main(coco_validation.get_args_parser().parse_args([str(arg) for arg in argv]))


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    """<root>/annotations/instances_val2017.json and <root>/images/val2017/image_<i>.jpg."""
    root = tmp_path_factory.mktemp("coco")
    source = tmp_path_factory.mktemp("tiny")
    write_tiny_csv_dataset(str(source))
    (root / "images" / "val2017").mkdir(parents=True)
    for index in range(len(TINY_IMAGES)):
        shutil.copy(source / f"image_{index}.jpg", root / "images" / "val2017" / f"image_{index}.jpg")
    annotations = [
        {"image_id": IMAGE_IDS[index], "category_id": CATEGORY_IDS[name], "bbox": [x1, y1, x2 - x1, y2 - y1],
         "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
        for index, objects in enumerate(TINY_IMAGES) for name, (x1, y1, x2, y2) in objects
    ]
    annotations.append({"image_id": 42, "category_id": 7, "bbox": CROWD_REGION, "area": 400, "iscrowd": 1})
    coco = {
        "images": [{"id": image_id, "file_name": f"image_{index}.jpg", "height": 96, "width": 128}
                   for index, image_id in enumerate(IMAGE_IDS)],
        "annotations": [dict(annotation, id=n + 1) for n, annotation in enumerate(annotations)],
        # Listed out of id order: class order is by category id (a, b).
        "categories": [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(coco))
    return root


def test_model_run_reports_the_twelve_numbers(coco_root, tmp_path):
    model = RetinaNet(2, depth=18, feature_size=32)
    with torch.no_grad():  # scores spread around 0.5: more than 100 detections per image pass 0.05
        model.classificationModel.output.bias.normal_(0.0, 1.0)
    checkpoint = tmp_path / "model.pt"
    # The checkpoint lists the classes in another order: they are mapped by name.
    save_model_checkpoint(str(checkpoint), model, ["b", "a"])
    output = tmp_path / "out"
    metrics = run("--coco_path", coco_root, "--model_path", checkpoint, "--output_dir", output,
                  "--workers", "0", "--device", "cpu", "--min_side", "96", "--max_side", "128", "--precision", "bf16")
    assert list(metrics["coco"]) == list(COCO_METRIC_NAMES)
    assert all(isinstance(value, float) for value in metrics["coco"].values())
    assert set(metrics["per_class"]) == {"a", "b"} and isinstance(metrics["map"], float)
    settings = metrics["settings"]
    assert settings["max_detections"] == 100 and settings["model_score_threshold"] == 0.05
    assert settings["topk_per_level"] == 1000  # 4 x 100 candidates: the model's own cut is more
    assert settings["precision"] == resolve_precision("bf16", torch.device("cpu")).name  # fp32 without fast bf16
    assert json.loads((output / "metrics.json").read_text())["coco"] == metrics["coco"]

    records = [json.loads(line) for line in (output / "detections.jsonl").read_text().splitlines()]
    assert [record["image"] for record in records] == [f"image_{index}.jpg" for index in range(4)]
    assert [len(record["scores"]) for record in records] == [100] * 4
    assert min(min(record["scores"]) for record in records) > 0.05
    results = json.loads((output / "coco_results.json").read_text())
    assert len(results) == 400
    assert {result["image_id"] for result in results} == set(IMAGE_IDS)
    assert {result["category_id"] for result in results} <= {3, 7}
    # pycocotools, the reference implementation, on the written files.
    annotation_file = coco_root / "annotations" / "instances_val2017.json"
    reference = evaluate_coco(annotation_file, output / "coco_results.json", backend="pycocotools")
    assert metrics["coco"] == pytest.approx(reference, abs=1e-12)
    detected = {label for record in records for label in record["labels"]}
    plots = {path.name for path in output.glob("*.png")}
    assert plots == {f"{name}_precision_recall.png" for name in detected}


def test_detections_equal_to_the_ground_truth(coco_root, tmp_path):
    detections = tmp_path / "perfect.jsonl"
    lines = []
    for index, objects in enumerate(TINY_IMAGES):
        boxes = [list(box) for _, box in objects]
        labels = [name for name, _ in objects]
        if index == 0:  # a detection inside the crowd region is neither right nor wrong
            x, y, w, h = CROWD_REGION
            boxes.append([x + 2, y + 2, x + w - 2, y + h - 2])
            labels.append("b")
        scores = np.linspace(0.9, 0.6, len(boxes)).tolist()
        record = {"image": f"image_{index}.jpg", "boxes": boxes, "scores": scores, "labels": labels}
        lines.append(json.dumps(record))
    detections.write_text("\n".join(lines) + "\n")
    metrics = run("--coco_path", coco_root, "--detections", detections, "--output_dir", tmp_path / "out")
    assert metrics["coco"]["AP"] == pytest.approx(1.0) and metrics["coco"]["AR100"] == pytest.approx(1.0)
    assert metrics["map"] == 1.0
    assert [result["num_annotations"] for result in metrics["per_class"].values()] == [3, 3]


def test_command_line_error_is_one_line_and_exit_status_2(tmp_path):
    missing = tmp_path / "no_coco"
    process = subprocess.run(
        [sys.executable, os.path.join(ROOT, "coco_validation.py"), "--coco_path", str(missing),
         "--detections", __file__],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert process.returncode == 2
    expected = os.path.join(str(missing), "annotations", "instances_val2017.json")
    [line] = process.stderr.splitlines()
    assert line.startswith(f"error: {expected}: COCO annotation file not found")


def test_yolo_style_layout_is_scored_against_its_own_labels(tmp_path):
    from tests.test_valid_inputs import _write_yolo_coco

    _write_yolo_coco(tmp_path / "coco")
    dataset_truth = [  # (file, COCO class index, x1y1x2y2) as _write_yolo_coco converts them by hand
        ("000000000139.jpg", 0, [15, 15, 45, 25]), ("000000000139.jpg", 56, [0, 0, 12, 16]),
        ("000000000139.jpg", 2, [45, 30, 60, 40]), ("000000000139.jpg", 3, [6, 4, 30, 24]),
        ("000000000285.jpg", 79, [0, 0, 20, 30]),
    ]
    from retinanet.coco_names import COCO_CLASS_NAMES

    records = {}
    for name, label, box in dataset_truth:
        record = records.setdefault(name, {"image": name, "boxes": [], "scores": [], "labels": []})
        record["boxes"].append(box)
        record["scores"].append(0.9)
        record["labels"].append(COCO_CLASS_NAMES[label])
    detections = tmp_path / "perfect.jsonl"
    detections.write_text("".join(json.dumps(record) + "\n" for record in records.values()))
    metrics = run("--coco_path", tmp_path / "coco", "--detections", detections, "--output_dir", tmp_path / "out")
    # The sub-pixel box of image 139 is missed by every detector: 5 of the 6 ground-truth boxes are found.
    assert metrics["coco"]["AR100"] == pytest.approx(5 / 6, abs=1e-6)
    assert metrics["per_class"]["person"]["ap"] == 1.0
