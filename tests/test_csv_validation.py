"""csv_validation.py end to end: a model run, re-evaluation, hand-computed metrics, odgt ground truth."""
import json
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import csv_validation
from retinanet.data.crowdhuman import convert_records, read_odgt
from retinanet.errors import UserError
from retinanet.evaluation import COCO_METRIC_NAMES, evaluate_voc, voc_at_score_threshold
from retinanet.evaluation.odgt_ground_truth import index_image_folder
from retinanet.model import RetinaNet
from tests.helpers import TINY_IMAGES, save_model_checkpoint, write_tiny_csv_dataset
from tools.annotation_writers import write_csv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASS_OF = {"a": "person", "b": "head"}  # the tiny images' classes under CrowdHuman names
FAST = ["--workers", "0", "--device", "cpu", "--min_side", "96", "--max_side", "128"]


def run(*argv):
    return csv_validation.main(csv_validation.get_args_parser().parse_args([str(arg) for arg in argv]))


def tiny_model(class_names):
    """A random ResNet-18 whose scores spread around 0.05, so thresholds at 0.01 and 0.05 both cut."""
    model = RetinaNet(len(class_names), depth=18, feature_size=32)
    with torch.no_grad():
        model.classificationModel.output.bias.normal_(math.log(0.03 / 0.97), 1.0)
    return model


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(annotations csv with relative image paths and classes person/head, classes csv, folder)."""
    folder = tmp_path_factory.mktemp("tiny")
    write_tiny_csv_dataset(str(folder))
    annotations = folder / "person_head.csv"
    annotations.write_text("".join(
        f"image_{index}.jpg,{x1},{y1},{x2},{y2},{CLASS_OF[name]}\n"
        for index, objects in enumerate(TINY_IMAGES) for name, (x1, y1, x2, y2) in objects
    ))
    classes = folder / "person_head_classes.csv"
    classes.write_text("person,0\nhead,1\n")
    return annotations, classes, folder


@pytest.fixture(scope="module")
def model_run(data, tmp_path_factory):
    """(metrics, output dir) of one run of a random model."""
    annotations, classes, folder = data
    checkpoint = folder / "model.pt"
    save_model_checkpoint(str(checkpoint), tiny_model(["person", "head"]), ["person", "head"])
    output = tmp_path_factory.mktemp("val_results")
    metrics = run("--csv_val", annotations, "--csv_classes", classes, "--model_path", checkpoint,
                  "--output_dir", output, *FAST)
    return metrics, output


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_model_run_writes_every_output(model_run):
    metrics, output = model_run
    on_disk = json.loads((output / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert isinstance(on_disk["map"], float)
    assert set(on_disk["per_class"]) == {"person", "head"}
    for result in on_disk["per_class"].values():
        assert isinstance(result["ap"], float) and isinstance(result["num_annotations"], int)
        assert 0 <= result["precision"] <= 1 and 0 <= result["recall"] <= 1
    assert on_disk["per_class"]["person"]["num_annotations"] == 3
    assert on_disk["per_class"]["head"]["num_annotations"] == 3
    assert set(on_disk["crowdhuman"]) == {"person", "head"}
    for result in on_disk["crowdhuman"].values():
        assert all(isinstance(result[key], float) for key in ("ap", "mr", "ji"))
    assert list(on_disk["coco"]) == list(COCO_METRIC_NAMES)
    settings = on_disk["settings"]
    assert settings["model_score_threshold"] == 0.01 and settings["max_detections"] == 1000
    assert settings["topk_per_level"] == 4000  # NMS's 4 candidates per detection kept, from any level
    # The model keeps detections down to 0.01, and the CrowdHuman protocol scores them all.
    assert settings["score_threshold"] == 0.05 and settings["crowdhuman_score_threshold"] is None

    records = read_jsonl(output / "detections.jsonl")
    assert [record["image"] for record in records] == [f"image_{index}.jpg" for index in range(4)]
    scores = np.concatenate([record["scores"] for record in records])
    labels = np.concatenate([record["labels"] for record in records])
    assert scores.min() > 0.01 and (scores < 0.05).any() and (scores >= 0.05).any()
    # No ignore regions here: every detection at or above 0.05 counts for precision and recall.
    for name in ("person", "head"):
        expected = int(((labels == name) & (scores >= np.float32(0.05))).sum())
        assert on_disk["per_class"][name]["num_detections"] == expected

    results = json.loads((output / "coco_results.json").read_text())
    assert len(results) == len(scores)
    assert {result["image_id"] for result in results} <= {1, 2, 3, 4}
    assert {result["category_id"] for result in results} == {1, 2}
    for name in ("person", "head"):
        assert (output / f"{name}_precision_recall.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reevaluating_saved_detections_gives_identical_metrics(data, model_run, tmp_path):
    annotations, classes, _ = data
    metrics, output = model_run
    again = run("--csv_val", annotations, "--csv_classes", classes,
                "--detections", output / "detections.jsonl", "--output_dir", tmp_path)
    for key in ("map", "per_class", "crowdhuman", "coco"):
        assert again[key] == metrics[key], key
    assert (tmp_path / "coco_results.json").read_text() == (output / "coco_results.json").read_text()
    assert not (tmp_path / "detections.jsonl").exists()


def test_detections_equal_to_the_ground_truth(data, tmp_path):
    annotations, classes, _ = data
    detections = tmp_path / "perfect.jsonl"
    score = iter(np.linspace(0.9, 0.5, 6))
    detections.write_text("".join(
        json.dumps({"image": f"image_{index}.jpg", "boxes": [list(box) for _, box in objects],
                    "scores": [float(next(score)) for _ in objects],
                    "labels": [CLASS_OF[name] for name, _ in objects]})
        + "\n"
        for index, objects in enumerate(TINY_IMAGES)
    ))
    metrics = run("--csv_val", annotations, "--csv_classes", classes, "--detections", detections,
                  "--output_dir", tmp_path / "out")
    assert metrics["map"] == 1.0
    for result in metrics["per_class"].values():
        assert (result["ap"], result["precision"], result["recall"]) == (1.0, 1.0, 1.0)
    for result in metrics["crowdhuman"].values():
        # The official AP integrates trapezoids from the first detection: recall 1/3 -> 1 at precision 1.
        assert result["ap"] == pytest.approx(2 / 3)
        assert result["mr"] == 0.0
        # The official JI's denominator carries eps = 1e-6: k / (k + eps) per image.
        assert result["ji"] < 1.0 and result["ji"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["coco"]["AP"] == pytest.approx(1.0) and metrics["coco"]["AP50"] == pytest.approx(1.0)


def test_precision_and_recall_at_a_threshold_equal_evaluate_voc_with_that_threshold():
    rng = np.random.default_rng(3)

    def boxes(count):
        corner = rng.uniform(0, 60, (count, 2))
        return np.concatenate([corner, corner + rng.uniform(5, 30, (count, 2))], axis=1).astype(np.float32)

    ground_truths, detections = [], []
    for _ in range(6):
        gt_boxes = boxes(5)
        ground_truths.append({"boxes": gt_boxes, "labels": rng.integers(0, 3, 5), "ignore": boxes(1),
                              "ignore_labels": np.array([-1])})
        # Half the detections sit on ground truth, half anywhere; rounded scores give ties.
        near = gt_boxes[rng.integers(0, 5, 8)] + rng.normal(0, 2, (8, 4)).astype(np.float32)
        detections.append({"boxes": np.concatenate([near, boxes(8)]),
                           "scores": np.round(rng.uniform(0, 1, 16), 1).astype(np.float32),
                           "labels": rng.integers(0, 3, 16)})
    every = evaluate_voc(detections, ground_truths, 3, score_threshold=-np.inf)
    for threshold in (0.0, 0.3, 0.5, 0.95):
        direct = evaluate_voc(detections, ground_truths, 3, score_threshold=threshold)
        read_off = voc_at_score_threshold(every, threshold)
        assert read_off["score_threshold"] == threshold
        for label in range(3):
            for key in ("precision", "recall", "num_detections", "true_positives", "false_positives"):
                assert read_off["per_class"][label][key] == direct["per_class"][label][key], (threshold, key)
            assert read_off["per_class"][label]["ap"] == every["per_class"][label]["ap"]


def test_checkpoint_with_other_classes_is_an_error_listing_both(data, tmp_path):
    annotations, classes, _ = data
    checkpoint = tmp_path / "cars.pt"
    save_model_checkpoint(str(checkpoint), RetinaNet(2, depth=18, feature_size=32), ["person", "car"])
    with pytest.raises(UserError, match=r"\[person, car\].*\[person, head\]"):
        run("--csv_val", annotations, "--csv_classes", classes, "--model_path", checkpoint,
            "--output_dir", tmp_path, *FAST)


def write_odgt_data(folder, layout):
    """Two images and their odgt; returns (odgt path, images_dir for --images_dir).

    img1 (100 x 200): people A and B, one mask region; img2 (64 x 64): person C, whose full box
    starts left of the image and is clipped to [0, 10, 30, 60].
    """
    records = [
        {"ID": "img1", "gtboxes": [
            {"tag": "person", "fbox": [10, 10, 40, 80], "vbox": [10, 10, 40, 60], "hbox": [20, 10, 20, 20]},
            {"tag": "person", "fbox": [100, 10, 40, 80], "vbox": [100, 10, 40, 60],
             "hbox": [110, 10, 20, 20]},
            {"tag": "mask", "fbox": [150, 20, 40, 60], "vbox": [150, 20, 40, 60], "hbox": [150, 20, 40, 60]},
        ]},
        {"ID": "img2", "gtboxes": [
            {"tag": "person", "fbox": [-10, 10, 40, 50], "vbox": [0, 10, 30, 40], "hbox": [5, 10, 10, 10]},
        ]},
    ]
    odgt = folder / "annotation_val.odgt"
    odgt.write_text("".join(json.dumps(record) + "\n" for record in records))
    images = folder / "CrowdHuman_val" / "Images"
    images.mkdir(parents=True)
    cv2.imwrite(str(images / "img1.jpg"), np.zeros((100, 200, 3), np.uint8))
    cv2.imwrite(str(images / "img2.jpg"), np.zeros((64, 64, 3), np.uint8))
    return odgt, folder if layout == "crowdhuman root" else images


@pytest.mark.parametrize("layout", ["images folder", "crowdhuman root"])
def test_odgt_ground_truth_with_official_detections(tmp_path, layout):
    odgt, images_dir = write_odgt_data(tmp_path, layout)
    official = tmp_path / "official.json"
    official.write_text(
        json.dumps({"ID": "img1", "dtboxes": [
            {"box": [10, 10, 40, 80], "score": 0.95, "tag": 1},  # A exactly: TP
            {"box": [152, 22, 30, 50], "score": 0.85, "tag": 1},  # inside the mask: dropped
            {"box": [60, 10, 30, 80], "score": 0.75, "tag": 1},  # touches nothing: FP
        ]}) + "\n"
        + json.dumps({"ID": "img2", "dtboxes": [{"box": [0, 10, 30, 50], "score": 0.65, "tag": 1}]}) + "\n"
    )
    # No height and width in these records: the sizes come from the images. Tag 1 is person.
    metrics = run("--odgt", odgt, "--images_dir", images_dir, "--crowdhuman_box", "full",
                  "--detections", official, "--output_dir", tmp_path / "out")
    # Counted detections by score: TP, FP, TP against 3 people -> recall 1/3, 1/3, 2/3; precision 1, 1/2, 2/3.
    person = metrics["per_class"]["person"]
    assert person["num_annotations"] == 3
    assert person["ap"] == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)  # VOC envelope: 1, 2/3, 2/3
    assert (person["precision"], person["recall"]) == pytest.approx((2 / 3, 2 / 3))
    crowd = metrics["crowdhuman"]["person"]
    assert crowd["ap"] == pytest.approx((2 / 3 - 1 / 3) * (1 / 2 + 2 / 3) / 2)
    # FPPI over 2 images: 0, 0.5, 0.5. References up to 0.3162 first reach 0.5 at miss rate 2/3;
    # 0.5623 and 1.0 are never reached and take the last miss rate, 1/3.
    assert crowd["mr"] == pytest.approx(math.exp((7 * math.log(2 / 3) + 2 * math.log(1 / 3)) / 9))
    # Thresholds 0.0-0.6 keep every detection: img1 k=1, n=3-1 (the dropped one), m=2 -> 1/3; img2 1.
    assert crowd["ji"] == pytest.approx((1 / 3 + 1) / 2) and crowd["ji_score_threshold"] == 0.0
    head = metrics["crowdhuman"]["head"]
    assert metrics["per_class"]["head"]["num_annotations"] == 3
    assert (head["ap"], head["mr"], head["ji"]) == (0.0, 1.0, 0.0)


def test_odgt_ground_truth_equals_the_converted_csv_where_their_rules_agree(tmp_path):
    # Here no box lies beyond the right or bottom edge, none is under a pixel after clipping and
    # no head detection meets the mask's head (ignored in the odgt, absent from the CSV), so the
    # official reading and build_annotations_file.py's conversion give the same boxes.
    odgt, images_dir = write_odgt_data(tmp_path, "images folder")
    split = convert_records(str(odgt), read_odgt(str(odgt)), index_image_folder(str(images_dir)),
                            ["person", "head"], "full")
    converted = tmp_path / "valid_annotations.csv"
    write_csv(str(converted), split)
    classes = tmp_path / "classes.csv"
    classes.write_text("person,0\nhead,1\n")
    official = tmp_path / "official.json"
    official.write_text(
        json.dumps({"ID": "img1", "dtboxes": [{"box": [12, 8, 40, 80], "score": 0.9, "tag": "person"},
                                              {"box": [22, 12, 18, 18], "score": 0.6, "tag": "head"},
                                              {"box": [150, 20, 40, 60], "score": 0.4, "tag": "person"}]})
        + "\n"
    )
    from_odgt = run("--odgt", odgt, "--images_dir", images_dir, "--crowdhuman_box", "full",
                    "--detections", official, "--output_dir", tmp_path / "odgt")
    from_csv = run("--csv_val", converted, "--csv_classes", classes, "--detections", official,
                   "--output_dir", tmp_path / "csv")
    for key in ("map", "per_class", "crowdhuman", "coco"):
        assert from_odgt[key] == from_csv[key], key


def test_odgt_heads_only(tmp_path):
    odgt, images_dir = write_odgt_data(tmp_path, "images folder")
    heads = tmp_path / "heads.json"
    records = [
        {"ID": "img1", "dtboxes": [{"box": [20, 10, 20, 20], "score": 0.9, "tag": "head"},
                                   {"box": [110, 10, 20, 20], "score": 0.8, "tag": "head"}]},
        {"ID": "img2", "dtboxes": [{"box": [5, 10, 10, 10], "score": 0.7, "tag": "head"}]},
    ]
    heads.write_text("".join(json.dumps(record) + "\n" for record in records))
    metrics = run("--odgt", odgt, "--images_dir", images_dir, "--crowdhuman_box", "head",
                  "--detections", heads, "--output_dir", tmp_path / "out", "--no_coco")
    assert metrics["per_class"]["person"]["num_annotations"] == 0
    assert metrics["per_class"]["head"]["ap"] == 1.0 and metrics["map"] == 1.0
    assert list(metrics["crowdhuman"]) == ["head"]
    assert metrics["crowdhuman"]["head"]["ji"] == pytest.approx(1.0, abs=1e-6)
    assert "coco" not in metrics


def test_odgt_image_missing_from_the_folder(tmp_path):
    odgt, images_dir = write_odgt_data(tmp_path, "images folder")
    (images_dir / "img2.jpg").unlink()
    with pytest.raises(UserError, match=r"annotation_val.odgt:2: image img2.jpg not found .*1 of 2 images"):
        run("--odgt", odgt, "--images_dir", images_dir, "--crowdhuman_box", "full",
            "--detections", tmp_path / "annotation_val.odgt", "--output_dir", tmp_path / "out")


OFFICIAL = os.path.join(ROOT, "tests", "fixtures", "crowdhuman_official")


def test_official_numbers_from_the_command_line_without_images(tmp_path):
    # CrowdDet's records carry height and width, and tag 1 is the class --crowdhuman_box scores.
    case = json.loads(open(os.path.join(OFFICIAL, "expected.json")).read())["edge_cases/head"]
    metrics = run("--odgt", os.path.join(OFFICIAL, case["ground_truth"]), "--crowdhuman_box", "head",
                  "--detections", os.path.join(OFFICIAL, case["detections"]), "--no_coco",
                  "--output_dir", tmp_path)
    result = metrics["crowdhuman"]["head"]
    for key in ("ap", "mr", "ji"):
        assert abs(result[key] - case[key]) <= 1e-6, key
    assert metrics["settings"]["images_dir"] is None


def test_odgt_without_images_needs_sizes_in_the_records(tmp_path):
    odgt, _ = write_odgt_data(tmp_path, "images folder")
    official = tmp_path / "official.json"
    official.write_text(json.dumps({"ID": "img1", "height": 100, "width": 200, "dtboxes": []}) + "\n")
    with pytest.raises(UserError, match=r"annotation_val.odgt:2: no size for image 'img2': .* give --images_dir"):
        run("--odgt", odgt, "--crowdhuman_box", "full", "--detections", official, "--output_dir", tmp_path / "out")


def test_our_detections_name_images_as_the_csv_writes_them_or_relative_to_its_folder(data, tmp_path):
    annotations, classes, folder = data
    # The CSV names image 0 by its absolute path and the others relative to its folder.
    rows = annotations.read_text().splitlines()
    absolute = str(folder / "image_0.jpg")
    listing = tmp_path / "mixed.csv"
    listing.write_text("".join(
        (row.replace("image_0.jpg", absolute, 1) if row.startswith("image_0.jpg") else row) + "\n" for row in rows
    ))
    os.symlink(folder / "image_1.jpg", tmp_path / "image_1.jpg")
    os.symlink(folder / "image_2.jpg", tmp_path / "image_2.jpg")
    os.symlink(folder / "image_3.jpg", tmp_path / "image_3.jpg")
    names = {0: absolute, 1: "image_1.jpg", 2: "./image_2.jpg", 3: str(tmp_path / "image_3.jpg")}
    detections = tmp_path / "dets.jsonl"
    detections.write_text("".join(
        json.dumps({"image": names[index], "boxes": [list(box) for _, box in objects],
                    "scores": [0.9] * len(objects), "labels": [CLASS_OF[name] for name, _ in objects]}) + "\n"
        for index, objects in enumerate(TINY_IMAGES)
    ))
    metrics = run("--csv_val", listing, "--csv_classes", classes, "--detections", detections, "--no_coco",
                  "--output_dir", tmp_path / "out")
    assert metrics["map"] == 1.0  # every record found its image


def test_bad_detections_line_names_file_and_line(data, tmp_path):
    annotations, classes, _ = data
    detections = tmp_path / "detections.jsonl"
    detections.write_text('{"image": "image_0.jpg", "boxes": [], "scores": [], "labels": []}\n{"image": \n')
    with pytest.raises(UserError, match=r"detections.jsonl:2: not valid JSON"):
        run("--csv_val", annotations, "--csv_classes", classes, "--detections", detections,
            "--output_dir", tmp_path / "out")


@pytest.mark.parametrize("argv, message", [
    (["--csv_val", "x.csv"], "either --model_path .* or --detections"),
    (["--csv_val", "x.csv", "--model_path", "m.pt", "--detections", "d.jsonl"], "either --model_path"),
    (["--detections", __file__], "either --csv_val .* or --odgt"),
    (["--odgt", "a.odgt", "--detections", __file__], "--odgt needs --crowdhuman_box"),
    (["--odgt", "a.odgt", "--crowdhuman_box", "full", "--model_path", __file__], "--odgt with --model_path needs"),
    (["--csv_val", "x.csv", "--detections", __file__, "--depth", "50"], "--depth, --max_detections, --precision and"),
    (["--csv_val", "x.csv", "--detections", __file__, "--iou_threshold", "0"], "--iou_threshold must be in"),
])
def test_bad_flag_combinations(argv, message):
    with pytest.raises(UserError, match=message):
        run(*argv)


def test_command_line_error_is_one_line_and_exit_status_2(tmp_path):
    missing = tmp_path / "missing.csv"
    process = subprocess.run(
        [sys.executable, os.path.join(ROOT, "csv_validation.py"), "--csv_val", str(missing),
         "--csv_classes", str(missing), "--detections", __file__],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert process.returncode == 2
    assert process.stderr.splitlines() == [f"error: {missing}: class list not found"]
