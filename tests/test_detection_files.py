"""Saved detections (retinanet.evaluation.detection_files): round trips, CrowdHuman's format, bad lines."""

import json
import re

import numpy as np
import pytest

from retinanet.errors import UserError
from retinanet.evaluation.detection_files import read_detection_file, read_detections, write_detections_jsonl

CLASSES = ["person", "head"]


def random_detections(rng, num_images):
    detections = []
    for _ in range(num_images):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 500, size=(n, 2)).astype(np.float32)
        boxes = np.hstack([xy, xy + rng.uniform(1, 100, size=(n, 2)).astype(np.float32)])
        detections.append(
            {
                "boxes": boxes.astype(np.float32),
                "scores": rng.uniform(0, 1, size=n).astype(np.float32),
                "labels": rng.integers(0, 2, size=n),
            }
        )
    return detections


def write_lines(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_round_trip_is_exact_for_float32(tmp_path):
    rng = np.random.default_rng(0)
    detections = random_detections(rng, 12)
    names = [f"images/img_{i}.jpg" for i in range(12)]
    write_detections_jsonl(tmp_path / "dets.jsonl", detections, names, CLASSES)
    read = read_detections(tmp_path / "dets.jsonl", names, CLASSES)
    assert len(read) == 12
    for original, loaded in zip(detections, read):
        assert loaded["boxes"].dtype == np.float32 and loaded["boxes"].shape == original["boxes"].shape
        np.testing.assert_array_equal(loaded["boxes"], original["boxes"])
        np.testing.assert_array_equal(loaded["scores"], original["scores"])
        np.testing.assert_array_equal(loaded["labels"], original["labels"])


def test_written_record_format(tmp_path):
    detections = [
        {
            "boxes": np.array([[1.5, 2, 3, 4]], np.float32),
            "scores": np.array([0.25], np.float32),
            "labels": np.array([1]),
        },
        {
            "boxes": np.zeros((0, 4), np.float32),
            "scores": np.zeros(0, np.float32),
            "labels": np.zeros(0, np.int64),
        },
    ]
    write_detections_jsonl(tmp_path / "d.jsonl", detections, ["a.jpg", 'b "quoted".jpg'], CLASSES)
    lines = (tmp_path / "d.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"image": "a.jpg", "boxes": [[1.5, 2.0, 3.0, 4.0]], "scores": [0.25], "labels": ["head"]},
        {"image": 'b "quoted".jpg', "boxes": [], "scores": [], "labels": []},
    ]


def test_images_without_a_record_have_no_detections_and_order_follows_image_names(tmp_path):
    path = write_lines(
        tmp_path / "d.jsonl",
        [
            {"image": "c.jpg", "boxes": [[0, 0, 1, 1]], "scores": [0.5], "labels": ["person"]},
            {"image": "a.jpg", "boxes": [[0, 0, 2, 2]], "scores": [0.7], "labels": ["head"]},
        ],
    )
    read = read_detections(path, ["a.jpg", "b.jpg", "c.jpg"], CLASSES)
    assert [r["scores"].tolist() for r in read] == [[pytest.approx(0.7)], [], [0.5]]
    assert read[1]["boxes"].shape == (0, 4) and read[0]["labels"].tolist() == [1]


def test_crowdhuman_official_format(tmp_path):
    path = write_lines(
        tmp_path / "official.odgt",
        [
            {
                "ID": "273271,1a0d6000b9e1f5b7",
                "height": 500,
                "width": 800,
                "dtboxes": [
                    {"box": [10.0, 20.0, 30.0, 40.0], "score": 0.9, "tag": "head"},
                    {"box": [0.5, 0.25, 100, 200], "score": 0.3, "tag": "person"},
                ],
            },
            {"ID": "284193,faa9000f2678b5e", "dtboxes": []},
        ],
    )
    names = ["Images/284193,faa9000f2678b5e.jpg", "Images/273271,1a0d6000b9e1f5b7.jpg", "Images/other.jpg"]
    read = read_detections(path, names, CLASSES)
    assert read[0]["boxes"].shape == (0, 4) and read[2]["scores"].shape == (0,)
    np.testing.assert_array_equal(read[1]["boxes"], [[10, 20, 40, 60], [0.5, 0.25, 100.5, 200.25]])
    assert read[1]["boxes"].dtype == np.float64
    assert read[1]["scores"].tolist() == [0.9, 0.3] and read[1]["labels"].tolist() == [1, 0]


def test_official_records_give_image_sizes_and_official_float64_corners(tmp_path):
    path = write_lines(
        tmp_path / "crowddet.json",
        [
            {"ID": "a", "height": 480, "width": 640, "dtboxes": [{"box": [0.1, 0.2, 0.2, 0.4], "score": 1, "tag": 1}]},
            {"ID": "b", "dtboxes": []},
        ],
    )
    found = read_detection_file(path, ["a.jpg", "b.jpg", "c.jpg"], CLASSES, untagged_class="person")
    assert found.image_sizes == [(480, 640), None, None]
    # x2 = x + w in float64, as the official code adds them: 0.1 + 0.2 is 0.30000000000000004.
    assert found.detections[0]["boxes"].tolist() == [[0.1, 0.2, 0.1 + 0.2, 0.2 + 0.4]]
    path.write_text('{"ID": "a", "height": 480.5, "width": 640, "dtboxes": []}\n')
    with pytest.raises(UserError, match=r'crowddet.json:1: "height" must be a positive integer, got 480.5'):
        read_detection_file(path, ["a.jpg"], CLASSES)


def test_our_records_may_use_other_spellings_of_an_image(tmp_path):
    path = write_lines(
        tmp_path / "d.jsonl",
        [
            {"image": "/data/set/a.jpg", "boxes": [[0, 0, 1, 1]], "scores": [0.5], "labels": ["person"]},
            {"image": "./images/b.jpg", "boxes": [[0, 0, 2, 2]], "scores": [0.7], "labels": ["head"]},
        ],
    )
    names, as_written = ["../set/a.jpg", "images/b.jpg"], ["/data/set/a.jpg", "/data/csv/images/b.jpg"]
    read = read_detections(path, names, CLASSES, other_names=as_written)
    assert [r["labels"].tolist() for r in read] == [[0], [1]]
    with pytest.raises(UserError, match=r"d.jsonl:1: detections for image '/data/set/a.jpg', which is not in"):
        read_detections(path, names, CLASSES)
    with pytest.raises(UserError, match=r"d.jsonl:1: image '/data/set/a.jpg' fits images '../set/a.jpg' and 'x.jpg'"):
        read_detections(path, names + ["x.jpg"], CLASSES, other_names=as_written + ["/data/set/a.jpg"])


def test_untagged_official_detections_need_a_class(tmp_path):
    # CrowdDet and mmdet write tag 1 for every detection.
    path = write_lines(
        tmp_path / "crowddet.json",
        [
            {"ID": "a", "dtboxes": [{"box": [1, 2, 3, 4], "score": 0.5, "tag": 1}]},
        ],
    )
    with pytest.raises(UserError, match=r"crowddet.json:1: detection 0 has tag 1, not a class name"):
        read_detections(path, ["a.png"], CLASSES)
    assert read_detections(path, ["a.png"], CLASSES, untagged_class="head")[0]["labels"].tolist() == [1]
    with pytest.raises(UserError, match="class 'face' for untagged detections is not one of: person, head"):
        read_detections(path, ["a.png"], CLASSES, untagged_class="face")


GOOD = '{"image": "a.jpg", "boxes": [[0, 0, 1, 1]], "scores": [0.5], "labels": ["person"]}'


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"image": "b.jpg", "boxes": [[0, 0, 1, 1]], "scores": [0.5], ', "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"name": "b.jpg"}', 'a record needs "image"'),
        (
            '{"image": "b.jpg", "boxes": [[0, 0, 1, 1]], "scores": [0.5], "labels": ["car"]}',
            "unknown class 'car' \\(classes: person, head\\)",
        ),
        (
            '{"image": "b.jpg", "boxes": [[0, 0, 1]], "scores": [0.5], "labels": ["head"]}',
            '"boxes" must be a list of \\[x1, y1, x2, y2\\]',
        ),
        (
            '{"image": "b.jpg", "boxes": [[0, 0, 1, 1], [0, 1]], "scores": [0.5, 1], "labels": ["a", "b"]}',
            '"boxes" must be lists of numbers of equal length',
        ),
        (
            '{"image": "b.jpg", "boxes": [[5, 0, 1, 1]], "scores": [0.5], "labels": ["head"]}',
            "box 0 \\[5.0, 0.0, 1.0, 1.0\\] has a negative width or height",
        ),
        (
            '{"image": "b.jpg", "boxes": [[0, 0, 1, 1]], "scores": [0.5, 0.2], "labels": ["head"]}',
            "1 boxes, 2 scores and 1 labels",
        ),
        (
            '{"image": "b.jpg", "boxes": [[0, 0, 1, 1]], "scores": ["0.5"], "labels": ["head"]}',
            '"scores" must hold numbers only',
        ),
        (
            '{"image": "b.jpg", "boxes": [[0, 0, 1, 1]], "scores": [NaN], "labels": ["head"]}',
            '"scores" holds a non-finite number',
        ),
        ('{"image": 3, "boxes": [], "scores": [], "labels": []}', '"image" must be a string'),
        ('{"ID": "b", "dtboxes": [{"box": [0, 0, 1, 1]}]}', 'each of "dtboxes" must be an object with "box"'),
        (
            '{"ID": "b", "dtboxes": [{"box": [0, 0, -1, 1], "score": 0.5, "tag": "head"}]}',
            "detection 0 .* has a negative width or height",
        ),
        ('{"ID": "b", "dtboxes": {"box": [0, 0, 1, 1]}}', '"dtboxes" must be a list'),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "dets.jsonl"
    path.write_text(GOOD + "\n\n" + bad_line + "\n")
    with pytest.raises(UserError, match=f"^{re.escape(str(path))}:3: {message}"):
        read_detections(path, ["a.jpg", "b.jpg"], CLASSES)


def test_not_utf8_line(tmp_path):
    path = tmp_path / "dets.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + b'{"image": "\xff"}\n')
    with pytest.raises(UserError, match=r"dets.jsonl:2: not UTF-8 text"):
        read_detections(path, ["a.jpg"], CLASSES)


def test_second_record_for_an_image(tmp_path):
    path = tmp_path / "dets.jsonl"
    path.write_text(GOOD + "\n" + GOOD + "\n")
    with pytest.raises(
        UserError, match=r"dets.jsonl:2: a second record for image 'a.jpg' \(the first is on line 1\)"
    ):
        read_detections(path, ["a.jpg"], CLASSES)


def test_detections_for_images_outside_the_ground_truth(tmp_path):
    path = write_lines(
        tmp_path / "dets.jsonl",
        [
            {"image": "a.jpg", "boxes": [], "scores": [], "labels": []},
            {"image": "x.jpg", "boxes": [], "scores": [], "labels": []},
            {"ID": "y", "dtboxes": []},
        ],
    )
    with pytest.raises(
        UserError,
        match=r"dets.jsonl:2: detections for image 'x.jpg', which is not in the "
        r"ground truth \(2 such records\)",
    ):
        read_detections(path, ["a.jpg"], CLASSES)


def test_ambiguous_official_id_and_missing_file(tmp_path):
    path = write_lines(tmp_path / "dets.jsonl", [{"ID": "a", "dtboxes": []}])
    with pytest.raises(UserError, match=r"dets.jsonl:1: ID 'a' fits images 'x/a.jpg' and 'y/a.png'"):
        read_detections(path, ["x/a.jpg", "y/a.png"], CLASSES)
    with pytest.raises(UserError, match=r"nothing.jsonl: cannot read detections"):
        read_detections(tmp_path / "nothing.jsonl", ["a.jpg"], CLASSES)


def test_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "dets.jsonl"
    path.write_text("old\n")
    bad = [
        {
            "boxes": np.array([[0, 0, 1, 1]], np.float32),
            "scores": np.array([np.nan], np.float32),
            "labels": np.array([0]),
        }
    ]
    with pytest.raises(ValueError, match="non-finite"):
        write_detections_jsonl(path, bad, ["a.jpg"], CLASSES)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["dets.jsonl"]
