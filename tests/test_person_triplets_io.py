"""Person triplets in and out: train.py from the odgt, csv_validation's scores, detect.py's JSON, visualize,
the detection-file round trip, the evaluation wiring on hand-made people, and export parity."""
import json
import os

import numpy as np
import pytest
import torch

import csv_validation
import detect
import export as export_script
import train
import visualize
from retinanet.errors import UserError
from retinanet.evaluation.crowdhuman import eval_ap
from retinanet.evaluation.detection_files import read_detections, write_detections_jsonl
from retinanet.evaluation.person_triplets import evaluate_person_triplets, read_people_ground_truth
from retinanet.export import check_parity, export_onnx, onnx_runner, parity_ok
from retinanet.model import RetinaNet
from retinanet.visualization import class_colours, draw_people
from tests.helpers import one_image_people, person_gtbox, randomise_heads, save_model_checkpoint, xywh_to_corners
from tools.synthetic_crowdhuman import crowd_config, generate_dataset


def triplet_model(num_classes: int = 1) -> RetinaNet:
    """A random person-triplet ResNet-18 with spread scores and varied boxes (see helpers.spread_model);
    num_classes=2 adds the head class."""
    torch.manual_seed(0)
    model = RetinaNet(num_classes=num_classes, depth=18, feature_size=16, person_triplets=True).eval()
    randomise_heads(model, class_bias=-1.0)
    return model


@pytest.fixture(scope="module")
def crowd(tmp_path_factory):
    """A small dense synthetic CrowdHuman (6 train, 3 val images of 192x144) and one triplet epoch on it."""
    root = tmp_path_factory.mktemp("crowd")
    config = crowd_config("dense", width=192, height=144, min_people=4, max_people=7, max_head=40)
    generate_dataset(str(root / "data"), num_train=6, num_val=3, config=config, seed=1)
    out = root / "run"
    args = train.get_args_parser().parse_args([
        "--dataset", "crowdhuman", "--crowdhuman_path", str(root / "data"), "--person_triplets",
        "--depth", "18", "--feature_size", "16", "--no_pretrained", "--min_side", "144", "--max_side", "192",
        "--workers", "0", "--device", "cpu", "--output_dir", str(out), "--epochs", "1", "--batch_size", "3",
        "--lr", "1e-3", "--warmup_iters", "1", "--precision", "fp32"])
    train.main(args)
    return root


def test_train_reads_triplets_from_the_odgt_and_records_the_variant(crowd):
    checkpoint = torch.load(crowd / "run" / "last.pt", weights_only=True)
    assert checkpoint["class_names"] == ["person", "head"]
    assert checkpoint["model_args"] == {"num_classes": 2, "depth": 18, "feature_size": 16, "person_triplets": True,
                                        "suppression_box": "full"}
    assert checkpoint["model"]["regressionModel.output.bias"].shape == (9 * 12,)


def test_resume_with_the_other_variant_is_a_user_error(crowd, tmp_path):
    args = train.get_args_parser().parse_args([
        "--dataset", "crowdhuman", "--crowdhuman_path", str(crowd / "data"), "--depth", "18", "--feature_size", "16",
        "--no_pretrained", "--workers", "0", "--device", "cpu", "--output_dir", str(tmp_path),
        "--resume", str(crowd / "run" / "last.pt")])
    with pytest.raises(UserError, match="trained with --person_triplets"):
        train.main(args)


def test_person_triplets_flag_needs_the_crowdhuman_dataset(tmp_path):
    args = train.get_args_parser().parse_args(["--dataset", "csv", "--csv_train", "a.csv", "--csv_classes", "c.csv",
                                               "--person_triplets", "--output_dir", str(tmp_path)])
    with pytest.raises(UserError, match="--dataset crowdhuman"):
        train.main(args)


def test_csv_validation_scores_every_box_kind_and_reads_its_own_detections_back(crowd, tmp_path):
    data = crowd / "data"
    common = ["--odgt", str(data / "annotation_val.odgt"), "--images_dir", str(data), "--no_coco"]
    ran = csv_validation.main(csv_validation.get_args_parser().parse_args(
        [*common, "--model_path", str(crowd / "run" / "last.pt"), "--output_dir", str(tmp_path / "a")]))
    scores = ran["person_triplets"]
    assert set(scores) == {"full", "visible", "head", "person_head", "pairs", "overlapped"}
    truth = read_people_ground_truth(str(data / "annotation_val.odgt"))
    assert scores["full"]["num_annotations"] == sum(len(a["boxes"]) for a in truth.kinds["full"])
    assert scores["pairs"]["num_annotations"] == sum(int(p["valid"].sum()) for p in truth.pairs)
    # The full-body numbers are the CrowdHuman protocol's numbers for the person class.
    assert scores["full"]["ap"] == pytest.approx(ran["crowdhuman"]["person"]["ap"])
    # and the head-class numbers, the protocol's numbers for the head class
    assert scores["head"]["ap"] == pytest.approx(ran["crowdhuman"]["head"]["ap"])
    with open(tmp_path / "a" / "metrics.json") as handle:
        assert json.load(handle)["person_triplets"] == scores
    assert ran["settings"]["suppression_box"] == "full"  # the checkpoint's
    paired = csv_validation.main(csv_validation.get_args_parser().parse_args(
        [*common, "--model_path", str(crowd / "run" / "last.pt"), "--suppression_box", "paired",
         "--output_dir", str(tmp_path / "p")]))
    assert paired["settings"]["suppression_box"] == "paired"
    assert paired["person_triplets"]["full"]["num_annotations"] == scores["full"]["num_annotations"]

    first = json.loads(open(tmp_path / "a" / "detections.jsonl").readline())
    assert {"full", "visible", "head", "scores", "labels"} <= set(first) and "boxes" not in first
    again = csv_validation.main(csv_validation.get_args_parser().parse_args(
        [*common, "--crowdhuman_box", "full", "--detections", str(tmp_path / "a" / "detections.jsonl"),
         "--output_dir", str(tmp_path / "b")]))
    assert again["person_triplets"] == scores


def test_detect_writes_three_boxes_per_person_and_visualize_draws_them(crowd, tmp_path):
    images = crowd / "data" / "CrowdHuman_val" / "Images"
    detect.main(detect.get_args_parser().parse_args([
        "--model_path", str(crowd / "run" / "last.pt"), "--input", str(images), "--output_dir", str(tmp_path / "d"),
        "--score_threshold", "0.0", "--device", "cpu"]))
    records = [json.loads(line) for line in open(tmp_path / "d" / "detections.jsonl")]
    assert len(records) == 3
    for record in records:
        assert "boxes" not in record
        assert len(record["full"]) == len(record["visible"]) == len(record["head"]) == len(record["scores"]) > 0
        assert "person" in record["classes"] and set(record["classes"]) <= {"person", "head"}
    result = visualize.main(visualize.get_args_parser().parse_args([
        "--dataset", "crowdhuman", "--crowdhuman_path", str(crowd / "data"), "--model_path",
        str(crowd / "run" / "last.pt"), "--num_images", "2", "--output_dir", str(tmp_path / "v"), "--device", "cpu"]))
    assert len(result["pictures"]) == 2 and all(os.path.isfile(path) for path in result["pictures"])


def test_draw_people_gives_each_person_one_colour_for_its_three_boxes():
    image = np.zeros((100, 120, 3), np.uint8)
    full = np.array([[10, 40, 40, 90], [60, 35, 100, 95]], np.float32)
    visible = np.array([[12, 50, 36, 88], [65, 40, 95, 80]], np.float32)
    head = np.array([[15, 42, 25, 50], [70, 38, 80, 46]], np.float32)
    drawn = draw_people(image, full, visible, head)
    colours = class_colours(2)
    for person in range(2):
        for box in (full[person], visible[person], head[person]):
            x1, y1, x2, y2 = box.astype(int)
            # the bottom-right corner of each box (captions sit above the top edge)
            assert drawn[y2, x2].tolist() == colours[person].tolist()
    assert colours[0].tolist() != colours[1].tolist()
    assert image.max() == 0  # the input is left as it was
    empty = np.zeros((0, 4), np.float32)
    assert np.array_equal(draw_people(image, empty, empty, empty, np.zeros(0, np.float32)), image)


def test_detection_file_round_trip_and_mixed_records(tmp_path):
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 50, (3, 5, 2)).astype(np.float32)
    kinds = [np.concatenate([c, c + rng.uniform(1, 30, c.shape).astype(np.float32)], axis=1) for c in corners]
    detections = [{"boxes": kinds[0], "visible_boxes": kinds[1], "head_boxes": kinds[2],
                   "scores": rng.random(5).astype(np.float32), "labels": np.zeros(5, np.int64)}]
    path = tmp_path / "d.jsonl"
    write_detections_jsonl(path, detections, ["a.jpg"], ["person"])
    back = read_detections(path, ["a.jpg", "b.jpg"], ["person"])
    for key in ("boxes", "visible_boxes", "head_boxes", "scores", "labels"):
        assert np.array_equal(back[0][key], detections[0][key]), key  # bit for bit
        assert len(back[1][key]) == 0  # an image without a record has no people
    with open(path, "a") as handle:
        handle.write('{"image": "b.jpg", "boxes": [[0, 0, 1, 1]], "scores": [0.5], "labels": ["person"]}\n')
    with pytest.raises(UserError, match=r"d\.jsonl:2: a record with \"boxes\" among person-triplet records"):
        read_detections(path, ["a.jpg", "b.jpg"], ["person"])
    path.write_text('{"image": "a.jpg", "full": [[0, 0, 1, 1]], "visible": [], "head": [[0, 0, 1, 1]], '
                    '"scores": [0.5], "labels": ["person"]}\n')
    with pytest.raises(UserError, match=r"d\.jsonl:1: 1, 0, 1 full/visible/head boxes"):
        read_detections(path, ["a.jpg"], ["person"])


def test_triplet_scores_on_hand_made_people(tmp_path):
    # B stands behind A: full bodies at IoU 0.6, heads apart; C is alone; D's head is ignored.
    people = [person_gtbox([10, 10, 40, 90], [10, 10, 40, 90], [20, 10, 12, 14]),
              person_gtbox([22, 12, 40, 90], [50, 12, 12, 40], [40, 12, 12, 14]),
              person_gtbox([120, 10, 40, 90], [120, 10, 40, 90], [130, 10, 12, 14]),
              person_gtbox([170, 10, 20, 60], [170, 10, 20, 60], [175, 10, 8, 10], head_attr={"ignore": 1})]
    truth = one_image_people(tmp_path, people)
    perfect = {"boxes": np.array([xywh_to_corners(p["fbox"]) for p in people], np.float32),
               "visible_boxes": np.array([xywh_to_corners(p["vbox"]) for p in people], np.float32),
               "head_boxes": np.array([xywh_to_corners(p["hbox"]) for p in people], np.float32),
               "scores": np.array([0.9, 0.8, 0.7, 0.6], np.float32), "labels": np.zeros(4, np.int64)}
    results = evaluate_person_triplets([perfect], truth, [(120, 200)])
    for kind, annotated in (("full", 4), ("visible", 4), ("head", 3)):
        assert results[kind]["num_annotations"] == annotated
        # every detection a true positive: the official AP of that ranking (below 1 for few boxes), no misses
        assert results[kind]["ap"] == pytest.approx(eval_ap(np.ones(annotated, bool), annotated)[0])
        assert results[kind]["mr"] == 0.0
    assert results["pairs"]["num_annotations"] == 3  # the ignored head's person is no pair
    assert results["overlapped"] == {"overlapped_recall": 1.0, "num_overlapped": 2, "recall": 1.0, "num_people": 4,
                                     "overlapped_ap": pytest.approx(eval_ap(np.ones(2, bool), 2)[0]),
                                     "overlapped_mr": 0.0}

    # B found with A's head: its full and visible boxes still match, its pair does not.
    wrong_head = {key: value.copy() for key, value in perfect.items()}
    wrong_head["head_boxes"][1] = wrong_head["head_boxes"][0]
    wrong = evaluate_person_triplets([wrong_head], truth, [(120, 200)])
    assert wrong["full"]["ap"] == results["full"]["ap"]
    assert wrong["pairs"]["ap"] < results["pairs"]["ap"]
    # Without B (what a full-body NMS does), half the overlapped people are found.
    no_b = {key: np.delete(value, 1, axis=0) for key, value in perfect.items()}
    assert evaluate_person_triplets([no_b], truth, [(120, 200)])["overlapped"]["overlapped_recall"] == 0.5


@pytest.mark.parametrize("class_names", [["person"], ["person", "head"]])
def test_export_parity_for_the_triplet_variant(tmp_path, class_names):
    pytest.importorskip("onnxruntime")
    model = triplet_model(len(class_names))
    path = str(tmp_path / "triplet.onnx")
    export_onnx(model, path, class_names, sample_size=(64, 96))
    import onnx

    properties = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert properties["boxes"].startswith("person triplets") and "full box" in properties["boxes"]
    assert ("head detected on its own" in properties["boxes"]) == (len(class_names) == 2)
    runner = onnx_runner(path)
    out = runner(np.random.default_rng(0).standard_normal((2, 3, 96, 64)).astype(np.float32), 0.3)
    assert set(out[0]) == {"boxes", "visible_boxes", "head_boxes", "scores", "labels"}
    rows = check_parity(model, runner, [(1, 64, 96), (2, 96, 64)], [0.05, 0.3])
    assert parity_ok(rows) and sum(row["reference"] for row in rows) > 100


def test_export_script_checks_a_triplet_checkpoint_in_both_formats(tmp_path):
    pytest.importorskip("onnxruntime")
    checkpoint = str(tmp_path / "model.pt")
    save_model_checkpoint(checkpoint, triplet_model(), ["person"])
    result = export_script.main(export_script.get_args_parser().parse_args([
        "--model_path", checkpoint, "--output", str(tmp_path / "m.onnx"), "--torchscript", str(tmp_path / "m.ts"),
        "--sample_size", "64", "64", "--max_detections", "20"]))
    assert result is not None and os.path.isfile(tmp_path / "m.onnx") and os.path.isfile(tmp_path / "m.ts")


def test_plain_crowdhuman_dataset_reads_what_the_converted_csv_holds(crowd):
    import build_annotations_file
    from retinanet.data import CrowdHumanDataset, CSVDataset

    data = crowd / "data"
    build_annotations_file.main(build_annotations_file.get_args_parser().parse_args(
        ["--data_dir", str(data), "--output_dir", str(crowd / "csv"), "--body", "full"]))
    from_odgt = CrowdHumanDataset(str(data), "val", person_triplets=False, body="full")
    from_csv = CSVDataset(crowd / "csv" / "valid_annotations.csv", ["person", "head"])
    assert len(from_odgt) == len(from_csv) == 3
    for index in range(3):
        assert os.path.samefile(from_odgt.image_path(index), from_csv.image_path(index))
        ours, theirs = from_odgt.annotations(index), from_csv.annotations(index)
        for key in ("boxes", "labels", "ignore", "ignore_labels"):
            assert np.array_equal(ours[key], theirs[key]), key


def test_two_predictions_per_anchor_need_triplets_and_the_same_count_to_resume(crowd, tmp_path):
    args = train.get_args_parser().parse_args(["--dataset", "crowdhuman", "--crowdhuman_path", str(crowd / "data"),
                                               "--instances_per_anchor", "2", "--output_dir", str(tmp_path)])
    with pytest.raises(UserError, match="--instances_per_anchor 2 is a person-triplet model's: add --person_triplets"):
        train.main(args)
    args = train.get_args_parser().parse_args([
        "--dataset", "crowdhuman", "--crowdhuman_path", str(crowd / "data"), "--person_triplets",
        "--instances_per_anchor", "2", "--depth", "18", "--feature_size", "16", "--no_pretrained", "--workers", "0",
        "--device", "cpu", "--output_dir", str(tmp_path), "--resume", str(crowd / "run" / "last.pt")])
    with pytest.raises(UserError, match="trained with --instances_per_anchor 1"):
        train.main(args)
