"""CocoDataset on a tiny COCO-format set written by the test."""
import json

import cv2
import numpy as np
import pytest
import torch

from retinanet.data import CocoDataset, Transform
from retinanet.errors import UserError

COCO = {
    "images": [
        {"id": 42, "file_name": "a.png", "height": 30, "width": 40},
        {"id": 7, "file_name": "b.png", "height": 20, "width": 20},
        {"id": 9, "file_name": "c.png"},  # no size given: read from the file header
    ],
    # deliberately not in id order: labels follow increasing category id
    "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
    "annotations": [
        {"id": 1, "image_id": 42, "category_id": 18, "bbox": [1, 2, 10, 5], "iscrowd": 0},
        {"id": 2, "image_id": 42, "category_id": 1, "bbox": [5, 5, 20, 20], "iscrowd": 1},
        {"id": 3, "image_id": 7, "category_id": 3, "bbox": [0, 0, 0.5, 4], "iscrowd": 0},  # under a pixel
        {"id": 4, "image_id": 42, "category_id": 3, "bbox": [3.5, 3, 4, 4.25]},  # iscrowd absent = 0
    ],
}


def _write_coco(root, layout="images/val2017", data=COCO):
    image_dir = root / layout
    image_dir.mkdir(parents=True)
    for image, (height, width) in zip(data["images"], [(30, 40), (20, 20), (12, 16)]):
        cv2.imwrite(str(image_dir / image["file_name"]), np.zeros((height, width, 3), np.uint8))
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return root


@pytest.mark.parametrize("layout", ["images/val2017", "val2017"])
def test_coco_layouts_categories_in_id_order_and_crowd_boxes_as_ignore(tmp_path, layout):
    dataset = CocoDataset(_write_coco(tmp_path, layout), "val2017")
    assert dataset.class_names == ["person", "car", "dog"]
    assert dataset.category_ids == [1, 3, 18]
    assert dataset.image_ids == [42, 7, 9]
    assert dataset.annotation_file == str(tmp_path / "annotations" / "instances_val2017.json")
    assert dataset.image_path(0) == str(tmp_path / layout / "a.png")
    first = dataset.annotations(0)
    np.testing.assert_array_equal(first["boxes"], [[1, 2, 11, 7], [3.5, 3, 7.5, 7.25]])
    np.testing.assert_array_equal(first["labels"], [2, 1])
    np.testing.assert_array_equal(first["ignore"], [[5, 5, 25, 25]])
    np.testing.assert_array_equal(first["ignore_labels"], [0])
    assert dataset.annotations(1)["boxes"].shape == (0, 4) and dataset.num_dropped_boxes == 1
    assert dataset.image_size(0) == (30, 40) and dataset.image_size(2) == (12, 16)


def test_getitem(tmp_path):
    dataset = CocoDataset(_write_coco(tmp_path), transform=Transform(min_side=60, max_side=1000))
    sample = dataset[0]
    assert sample["image"].shape == (3, 60, 80) and sample["scale"] == 2.0
    assert torch.equal(sample["boxes"], torch.tensor([[2.0, 4.0, 22.0, 14.0], [7.0, 6.0, 15.0, 14.5]]))
    assert torch.equal(sample["ignore_labels"], torch.tensor([0]))


def test_missing_pieces_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="instances_val2017.json: COCO annotation file not found"):
        CocoDataset(tmp_path)
    root = _write_coco(tmp_path / "one")
    (root / "images" / "val2017" / "b.png").unlink()
    with pytest.raises(UserError, match=r"image id 7: .*b.png not found \(1 of 3 images are missing\)"):
        CocoDataset(root)
    (root / "images" / "val2017").rename(root / "elsewhere")
    with pytest.raises(UserError, match="COCO images for 'val2017' not found"):
        CocoDataset(root)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["annotations"][1].update(category_id=5),
         r"annotation #1 \(id 2\): category_id 5 is not in"),
        (lambda d: d["annotations"][0].update(image_id=1), r"annotation #0 \(id 1\): image_id 1 is not in"),
        (lambda d: d["annotations"][3].update(bbox=[1, 2, 3]), r"annotation #3 \(id 4\): 'bbox' must be"),
        (lambda d: d["images"][1].pop("file_name"), r"image #1: 'file_name' is missing or not a string"),
        (lambda d: d["categories"].append({"id": 3, "name": "bus"}), "duplicate category ids"),
        (lambda d: d.pop("annotations"), "'annotations' must be a list of objects"),
    ],
)
def test_malformed_annotation_files(tmp_path, edit, message):
    data = json.loads(json.dumps(COCO))
    root = _write_coco(tmp_path, data=data)
    edit(data)
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=message):
        CocoDataset(root)


def test_invalid_json_reports_its_line(tmp_path):
    root = _write_coco(tmp_path)
    (root / "annotations" / "instances_val2017.json").write_text('{\n"images": [\n}\n')
    with pytest.raises(UserError, match=r"instances_val2017.json:3: invalid JSON"):
        CocoDataset(root)
