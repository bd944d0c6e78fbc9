"""The synthetic CrowdHuman generator: layout, determinism, content, and the round trip to CSVDataset."""
import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import build_annotations_file
from retinanet.data import CSVDataset, Transform
from retinanet.errors import UserError
from tools.synthetic_crowdhuman import SyntheticConfig, generate_dataset

REPO = Path(__file__).resolve().parent.parent
CONFIG = SyntheticConfig()  # the defaults: 320x240, 3-8 people, heads 28-56 px


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    """12 train and 4 val images at the default settings, generated once for this file."""
    root = tmp_path_factory.mktemp("synthetic")
    records = generate_dataset(str(root), num_train=12, num_val=4, config=CONFIG, seed=0)
    return root, records


def _odgt(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_layout_and_ids_are_crowdhumans(dataset_dir):
    root, records = dataset_dir
    assert _odgt(root / "annotation_train.odgt") == records["train"]
    assert _odgt(root / "annotation_val.odgt") == records["val"]
    for record in records["train"] + records["val"]:
        assert re.fullmatch(r"\d{6},[0-9a-f]{16}", record["ID"])
    folders = {path.parent.parent.name for path in root.glob("*/Images/*.jpg")}
    assert folders == {"CrowdHuman_train01", "CrowdHuman_train02", "CrowdHuman_train03", "CrowdHuman_val"}
    assert len(list(root.glob("CrowdHuman_train0*/Images/*.jpg"))) == 12
    assert len(list(root.glob("CrowdHuman_val/Images/*.jpg"))) == 4
    image = cv2.imread(str(next(root.glob("CrowdHuman_val/Images/*.jpg"))))
    assert image.shape == (240, 320, 3)


def test_same_seed_same_dataset_other_seed_other_dataset(tmp_path):
    small = SyntheticConfig(width=160, height=120, min_head=20, max_head=30)
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        generate_dataset(str(tmp_path / name), num_train=3, num_val=1, config=small, seed=seed)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert (tmp_path / "a" / "annotation_train.odgt").read_text() != (
        tmp_path / "c" / "annotation_train.odgt").read_text()


def _xyxy(box):
    x, y, w, h = box
    return np.array([x, y, x + w, y + h], np.float64)


def test_people_are_crowded_occluded_cut_by_borders_and_learnable_sizes(dataset_dir):
    _, records = dataset_dir
    people = [box for record in records["train"] for box in record["gtboxes"] if box["tag"] == "person"]
    per_image = [sum(box["tag"] == "person" for box in record["gtboxes"]) for record in records["train"]]
    assert max(per_image) <= CONFIG.max_people and np.mean(per_image) >= 4
    inside_image = np.array([0, 0, CONFIG.width, CONFIG.height])
    beyond_border = 0
    for person in people:
        full, visible, head = _xyxy(person["fbox"]), _xyxy(person["vbox"]), _xyxy(person["hbox"])
        assert (visible[:2] >= full[:2]).all() and (visible[2:] <= full[2:]).all()  # visible within full
        assert (visible[:2] >= inside_image[:2]).all() and (visible[2:] <= inside_image[2:]).all()
        assert (head[:2] >= full[:2]).all() and (head[2:] <= full[2:]).all()
        # an ellipse with integer half-axes spans 2 * (h // 2) + 1 rows
        assert CONFIG.min_head <= person["hbox"][3] <= CONFIG.max_head + 1
        beyond_border += bool((full[:2] < 0).any() or (full[2:] > inside_image[2:]).any())
    assert beyond_border >= 5
    assert sum(person["fbox"] != person["vbox"] for person in people) >= len(people) // 3
    assert 0 < sum(person["head_attr"]["ignore"] for person in people) < len(people) // 3
    assert sum(person["extra"]["ignore"] for person in people) < len(people) // 3
    every_box = [box for record in records["train"] + records["val"] for box in record["gtboxes"]]
    masks = [box for box in every_box if box["tag"] == "mask"]
    assert masks and all(box["extra"]["ignore"] == 1 for box in masks)


def _retinanet_anchors(height: int, width: int) -> np.ndarray:
    """(A, 4) anchors of the published RetinaNet for a (height, width) input: P3-P7, 9 per place."""
    per_level = []
    for level, base in zip(range(3, 8), (32, 64, 128, 256, 512)):
        stride = 2 ** level
        sizes = [(base * scale / np.sqrt(ratio), base * scale * np.sqrt(ratio))
                 for ratio in (0.5, 1.0, 2.0) for scale in (1.0, 2 ** (1 / 3), 2 ** (2 / 3))]
        half = np.array([[-w / 2, -h / 2, w / 2, h / 2] for w, h in sizes])  # (9, 4)
        ys, xs = np.meshgrid((np.arange(-(-height // stride)) + 0.5) * stride,
                             (np.arange(-(-width // stride)) + 0.5) * stride, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel(), xs.ravel(), ys.ravel()], axis=1)  # (P, 4)
        per_level.append((centres[:, None, :] + half[None]).reshape(-1, 4))
    return np.concatenate(per_level)


def test_almost_every_box_can_be_matched_by_an_anchor_at_the_generated_size(dataset_dir):
    """Learnability: a box gets positive anchors only at IoU >= 0.5 with one of them."""
    _, records = dataset_dir
    anchors = _retinanet_anchors(256, 320)  # 320x240 padded to a multiple of 32
    anchor_areas = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    best_iou = {"vbox": [], "hbox": []}
    people = [box for record in records["train"] for box in record["gtboxes"] if box["tag"] == "person"]
    for person in people:
        for key, ignored in (("vbox", person["extra"]["ignore"]), ("hbox", person["head_attr"]["ignore"])):
            if ignored:
                continue
            box = np.clip(_xyxy(person[key]), 0, [320, 240, 320, 240])
            overlap = np.minimum(box[2:], anchors[:, 2:]) - np.maximum(box[:2], anchors[:, :2])  # (A, 2)
            inter = np.prod(np.clip(overlap, 0, None), axis=1)
            union = (box[2] - box[0]) * (box[3] - box[1]) + anchor_areas - inter
            best_iou[key].append((inter / union).max())
    assert len(best_iou["hbox"]) >= 40 and len(best_iou["vbox"]) >= 40
    assert np.mean(np.array(best_iou["hbox"]) >= 0.5) >= 0.97
    assert np.mean(np.array(best_iou["vbox"]) >= 0.5) >= 0.95


def test_visible_heads_are_skin_toned_and_background_is_not(dataset_dir):
    root, records = dataset_dir
    paths = {path.stem: path for path in root.glob("*/Images/*.jpg")}
    checked = 0
    for record in records["train"]:
        image = cv2.cvtColor(cv2.imread(str(paths[record["ID"]])), cv2.COLOR_BGR2RGB).astype(np.float64)
        covered = np.zeros(image.shape[:2], bool)
        for box in record["gtboxes"]:
            x1, y1, x2, y2 = np.clip(_xyxy(box["fbox"]), 0, [320, 240, 320, 240]).astype(int)
            covered[y1:y2, x1:x2] = True
            if box["tag"] == "person" and box["head_attr"]["occ"] == 0 and not box["extra"]["ignore"]:
                x, y, w, h = box["hbox"]
                # the face: the middle of the lower half of the head, below the hair cap
                face = image[y + h // 2:y + 3 * h // 4, x + w // 3:x + 2 * w // 3].reshape(-1, 3).mean(axis=0)
                assert face[0] > face[1] > face[2], face  # skin tones: red > green > blue
                checked += 1
        background = image[~covered].reshape(-1, 3)
        if len(background) > 500:
            red, green, blue = background.T
            assert ((red > green + 12) & (green > blue + 12)).mean() < 0.02
    assert checked >= 10


def test_round_trip_generator_converter_csv_dataset(dataset_dir, tmp_path):
    root, records = dataset_dir
    build_annotations_file.main(build_annotations_file.get_args_parser().parse_args(
        ["--data_dir", str(root), "--output_dir", str(tmp_path)]))
    for split, csv_name in (("train", "train_annotations.csv"), ("val", "valid_annotations.csv")):
        dataset = CSVDataset(tmp_path / csv_name, ["person", "head"], Transform(min_side=480, max_side=1000))
        assert len(dataset) == len(records[split])
        by_id = {record["ID"]: record for record in records[split]}
        for index in range(len(dataset)):
            record = by_id[Path(dataset.image_path(index)).stem]
            objects, ignores = [], []
            for box in record["gtboxes"]:
                # Expected boxes computed here: vbox / hbox, clipped to 320x240, then scaled by 2.
                candidates = [(box["vbox"], 0, box["tag"] == "mask" or box["extra"]["ignore"] == 1)]
                if box["tag"] == "person":
                    candidates.append((box["hbox"], 1, box["head_attr"]["ignore"] == 1))
                for xywh, label, ignore in candidates:
                    x1, y1, x2, y2 = _xyxy(xywh)
                    x1, x2 = max(x1, 0), min(x2, 320)
                    y1, y2 = max(y1, 0), min(y2, 240)
                    if x2 - x1 >= 1 and y2 - y1 >= 1:
                        (ignores if ignore else objects).append(([x1 * 2, y1 * 2, x2 * 2, y2 * 2], label))
            sample = dataset[index]
            assert sample["image"].shape == (3, 480, 640) and sample["scale"] == 2.0
            for key, expected in (("boxes", objects), ("ignore", ignores)):
                expected_boxes = np.array([box for box, _ in expected]).reshape(-1, 4)
                np.testing.assert_array_equal(sample[key].numpy(), expected_boxes)
            np.testing.assert_array_equal(sample["labels"].numpy(), [label for _, label in objects])
            np.testing.assert_array_equal(sample["ignore_labels"].numpy(), [label for _, label in ignores])


def test_bad_settings_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="max_head 100 is over half the image height 120"):
        generate_dataset(str(tmp_path), 1, 1, SyntheticConfig(width=160, height=120, max_head=100))
    with pytest.raises(UserError, match="min_people <= max_people"):
        generate_dataset(str(tmp_path), 1, 1, SyntheticConfig(min_people=5, max_people=2))
    with pytest.raises(UserError, match="at least one train and one val image"):
        generate_dataset(str(tmp_path), 0, 1)


def test_script_exits_with_one_line_error(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "make_synthetic_crowdhuman.py"), "--output_dir", str(tmp_path),
         "--height", "100"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: max_head 56 is over half the image height 100"]
    assert not any(tmp_path.iterdir())


def test_main_arguments_reach_the_generator(tmp_path):
    from tools import make_synthetic_crowdhuman  # tools/ as a namespace package of the checkout's root
    args = make_synthetic_crowdhuman.get_args_parser().parse_args(
        ["--output_dir", str(tmp_path), "--num_train", "2", "--num_val", "1", "--width", "200",
         "--height", "150", "--min_people", "1", "--max_people", "1", "--min_head", "30", "--max_head", "30"])
    assert isinstance(args, argparse.Namespace)
    records = make_synthetic_crowdhuman.main(args)
    for record in records["train"] + records["val"]:
        people = [box for box in record["gtboxes"] if box["tag"] == "person"]
        assert len(people) <= 1 and all(person["hbox"][3] == 31 for person in people)
    assert cv2.imread(str(next(tmp_path.glob("CrowdHuman_val/Images/*.jpg")))).shape == (150, 200, 3)
