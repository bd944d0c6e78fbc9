"""build_annotations_file.py on the hand-written odgt files in tests/fixtures/crowdhuman/."""
import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

import build_annotations_file
from retinanet.data import CSVDataset
from retinanet.errors import UserError

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "crowdhuman"

# Image (folder, height, width) of every ID in the fixtures; 273271,ccc has no image on purpose.
IMAGES = {
    "273271,aaa": ("CrowdHuman_train01", 100, 200),
    "273271,bbb": ("CrowdHuman_train02", 48, 64),
    "273271,ddd": ("CrowdHuman_train03", 40, 50),
    "284193,eee": ("CrowdHuman_val", 60, 80),
}
AAA = "CrowdHuman_train01/Images/273271,aaa.jpg"
BBB = "CrowdHuman_train02/Images/273271,bbb.jpg"
DDD = "CrowdHuman_train03/Images/273271,ddd.jpg"
EEE = "CrowdHuman_val/Images/284193,eee.jpg"

# Box by box, worked out by hand from the fixture: [x, y, w, h] -> x1y1x2y2 clipped to the image.
VISIBLE_TRAIN = [
    (AAA, [0, 10, 40, 90], "person"),  # vbox [0, 10, 40, 80]
    (AAA, [10, 10, 30, 35], "head"),
    (AAA, [100, 20, 130, 70], "__ignore__:person"),  # extra.ignore == 1
    (AAA, [105, 20, 125, 40], "head"),  # ... but its head is a normal head
    (AAA, [150, 5, 190, 65], "person"),
    (AAA, [160, 5, 180, 25], "__ignore__:head"),  # head_attr.ignore == 1
    (AAA, [60, 60, 90, 90], "__ignore__:person"),  # tag mask, no head
    # box 4 lies beyond x = 200 (body dropped) and its head is 0.5 px wide once clipped (dropped)
    (AAA, [40, 50, 60, 90], "person"),  # vbox [40, 50, 20, 40] -> y2 = 90 < 100
    (AAA, [45, 50, 55, 62], "head"),
    (BBB, None, None),  # no boxes: kept as an empty image
    (DDD, [5, 5, 25, 35], "person"),
    (DDD, [10, 5, 18, 13], "head"),
]
FULL_BODIES = {0: [0, 10, 40, 100], 2: [100, 20, 130, 90], 4: [150, 5, 190, 95], 6: [60, 60, 90, 90],
               7: [40, 50, 60, 100], 10: [5, 5, 25, 35]}  # fbox [-20, 10, 60, 120] -> [0, 10, 40, 100] etc.


def _data_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "CrowdHuman"
    data_dir.mkdir()
    for name in ("annotation_train.odgt", "annotation_val.odgt"):
        shutil.copy(FIXTURES / name, data_dir / name)
    for image_id, (folder, height, width) in IMAGES.items():
        (data_dir / folder / "Images").mkdir(parents=True, exist_ok=True)
        image = np.zeros((height, width, 3), np.uint8)
        cv2.imwrite(str(data_dir / folder / "Images" / f"{image_id}.jpg"), image)
    return data_dir


def _args(data_dir: Path, **overrides) -> argparse.Namespace:
    args = build_annotations_file.get_args_parser().parse_args(["--data_dir", str(data_dir)])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def _rows(path: Path, delimiter: str = ","):
    """CSV rows as (path, [x1, y1, x2, y2] floats or None, class or None)."""
    rows = []
    with open(path, newline="") as handle:
        for row in csv.reader(handle, delimiter=delimiter):
            assert len(row) == 6
            rows.append((row[0], [float(v) for v in row[1:5]] if row[1] else None, row[5] or None))
    return rows


def test_visible_bodies_box_by_box(tmp_path, capsys):
    data_dir = _data_dir(tmp_path)
    build_annotations_file.main(_args(data_dir))
    assert _rows(data_dir / "train_annotations.csv") == VISIBLE_TRAIN
    assert _rows(data_dir / "valid_annotations.csv") == [
        (EEE, [10, 10, 40, 45], "person"),  # no head_attr / extra at all: nothing ignored
        (EEE, [15, 10, 25, 20], "head"),
    ]
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    odgt = data_dir / "annotation_train.odgt"
    assert warnings[0].startswith(f"warning: {odgt}: 1 of 4 images not found in ")
    assert "skipped (first: line 4, ID '273271,ccc')" in captured.err
    assert "train: 3 images, 1 missing (skipped)" in captured.out
    assert "boxes: person 4 (+2 ignore), head 4 (+1 ignore)" in captured.out
    assert "dropped after clipping (under 1 px): 2" in captured.out


def test_full_bodies_are_clipped_to_the_image(tmp_path):
    data_dir = _data_dir(tmp_path)
    build_annotations_file.main(_args(data_dir, body="full"))
    expected = [
        (path, FULL_BODIES.get(index, box), name) for index, (path, box, name) in enumerate(VISIBLE_TRAIN)
    ]
    assert _rows(data_dir / "train_annotations.csv") == expected


def test_heads_only(tmp_path):
    data_dir = _data_dir(tmp_path)
    build_annotations_file.main(_args(data_dir, classes="head"))
    expected = [row for row in VISIBLE_TRAIN if row[2] is None or row[2].endswith("head")]
    assert _rows(data_dir / "train_annotations.csv") == expected


def test_space_delimited_output_into_another_folder_loads_in_csv_dataset(tmp_path, monkeypatch):
    data_dir = _data_dir(tmp_path)
    output_dir = tmp_path / "out"
    monkeypatch.chdir(tmp_path)  # image paths are relative to the CSV's folder, not to the CWD
    build_annotations_file.main(_args(data_dir, output_dir=str(output_dir), delimiter=" "))
    assert not (data_dir / "train_annotations.csv").exists()
    rows = _rows(output_dir / "train_annotations.csv", delimiter=" ")
    assert rows[0][0] == "../CrowdHuman/" + AAA
    dataset = CSVDataset(output_dir / "train_annotations.csv", ["person", "head"], delimiter=" ")
    assert len(dataset) == 3
    first = dataset.annotations(0)
    objects = [row for row in VISIBLE_TRAIN if row[0] == AAA and not row[2].startswith("__ignore__")]
    ignores = [row for row in VISIBLE_TRAIN if row[0] == AAA and row[2].startswith("__ignore__")]
    np.testing.assert_array_equal(first["boxes"], [box for _, box, _ in objects])
    np.testing.assert_array_equal(first["labels"], [["person", "head"].index(name) for _, _, name in objects])
    np.testing.assert_array_equal(first["ignore"], [box for _, box, _ in ignores])
    np.testing.assert_array_equal(first["ignore_labels"], [0, 1, 0])
    assert dataset.annotations(1)["boxes"].shape == (0, 4)
    assert dataset.image_size(0) == (100, 200)


def test_coco_json_marks_ignore_regions_as_crowd(tmp_path):
    data_dir = _data_dir(tmp_path)
    build_annotations_file.main(_args(data_dir))
    data = json.loads((data_dir / "train.json").read_text())
    assert data["categories"] == [{"id": 1, "name": "person", "supercategory": "person"},
                                  {"id": 2, "name": "head", "supercategory": "person"}]
    images = [(i["id"], i["file_name"], i["height"], i["width"], i["crowdhuman_id"]) for i in data["images"]]
    assert images == [
        (1, AAA, 100, 200, "273271,aaa"), (2, BBB, 48, 64, "273271,bbb"), (3, DDD, 40, 50, "273271,ddd")
    ]
    annotations = [(a["image_id"], a["category_id"], a["bbox"], a["iscrowd"]) for a in data["annotations"]]
    expected = []
    for path, box, name in VISIBLE_TRAIN:
        if box is not None:
            x1, y1, x2, y2 = box
            expected.append(([AAA, BBB, DDD].index(path) + 1, 1 + name.endswith("head"),
                             [x1, y1, x2 - x1, y2 - y1], int(name.startswith("__ignore__"))))
    assert annotations == expected
    assert [a["id"] for a in data["annotations"]] == list(range(1, len(expected) + 1))
    assert data["annotations"][0]["area"] == 40 * 80
    coco = COCO(str(data_dir / "train.json"))  # pycocotools accepts it
    assert len(coco.getAnnIds(catIds=[2], iscrowd=False)) == 4


def test_missing_odgt_and_bad_lines_are_user_errors(tmp_path):
    data_dir = _data_dir(tmp_path)
    (data_dir / "annotation_val.odgt").unlink()
    with pytest.raises(UserError, match="annotation_val.odgt: CrowdHuman annotation file not found"):
        build_annotations_file.main(_args(data_dir))
    assert not list(data_dir.glob("*.csv")) and not list(data_dir.glob("*.json"))  # nothing half-written


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"ID": "284193,eee", "gtboxes": [}', ":2: invalid JSON"),
        ('{"ID": "284193,eee", "gtboxes": [{"tag": "car", "vbox": [1, 1, 2, 2]}]}',
         ":2: gtbox 0: unknown tag 'car'"),
        ('{"ID": "284193,eee", "gtboxes": [{"tag": "person", "vbox": [1, 1, 2]}]}',
         ":2: gtbox 0: 'vbox' must be [x, y, width, height] numbers"),
        ('{"ID": "284193,eee", "gtboxes": [{"tag": "mask", "fbox": [1, 1, 2, 2]}]}',
         ":2: gtbox 0: 'vbox' must be"),
        ('{"ID": "284193,eee", "gtboxes": [{"tag": "person", "vbox": [1, "2", 3, 4], "hbox": [1, 1, 1, 1]}]}',
         ":2: gtbox 0: 'vbox' must be [x, y, width, height] numbers, got [1, '2', 3, 4]"),
        ('{"ID": "284193,eee", "gtboxes": [{"tag": "person", "vbox": [1, 1, 2, 2], "hbox": [1, 1, 1, 1]}, '
         '{"tag": "person", "vbox": [1, 1, 2, 2], "hbox": [1, 1, 1, 1, 1]}]}',
         ":2: gtbox 1: 'hbox' must be [x, y, width, height] numbers, got [1, 1, 1, 1, 1]"),
        ('{"gtboxes": []}', ":2: 'ID' is missing or not a string"),
        ('["284193,eee"]', ":2: expected a JSON object"),
    ],
)
def test_malformed_odgt_lines_report_their_line(tmp_path, line, message):
    data_dir = _data_dir(tmp_path)
    (data_dir / "annotation_val.odgt").write_text("\n" + line + "\n")
    with pytest.raises(UserError) as error:
        build_annotations_file.main(_args(data_dir))
    assert str(error.value).startswith(f"{data_dir / 'annotation_val.odgt'}{message}")


def test_bad_flags(tmp_path):
    data_dir = _data_dir(tmp_path)
    with pytest.raises(UserError, match="--classes 'person,car'"):
        build_annotations_file.main(_args(data_dir, classes="person,car"))
    with pytest.raises(UserError, match="--delimiter must be one character"):
        build_annotations_file.main(_args(data_dir, delimiter="::"))
    args = build_annotations_file.get_args_parser().parse_args(["--dataset_name", "crowd_human"])
    assert args.dataset == "crowd_human" and args.data_dir == "./data/CrowdHuman" and args.output_dir is None


def test_no_images_at_all_is_an_error(tmp_path):
    data_dir = _data_dir(tmp_path)
    shutil.rmtree(data_dir / "CrowdHuman_val")
    with pytest.raises(UserError, match="annotation_val.odgt: none of its 1 images found in"):
        build_annotations_file.main(_args(data_dir))


def test_script_exits_with_one_line_error(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "build_annotations_file.py"), "--data_dir", str(tmp_path / "nowhere")],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {tmp_path / 'nowhere' / 'annotation_train.odgt'}: CrowdHuman annotation file not found"
    ]
