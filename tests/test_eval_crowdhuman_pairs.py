"""Body-head pair AP and MR^-2 against golden numbers of the official compare_caltech_union."""
import json
from pathlib import Path

import numpy as np
import pytest

from retinanet.evaluation.crowdhuman import compare_caltech_union, evaluate_crowdhuman_pairs, pair_ground_truth

PAIRS = Path(__file__).parent / "fixtures" / "crowdhuman_pairs"
OFFICIAL = Path(__file__).parent / "fixtures" / "crowdhuman_official"
EXPECTED = json.loads((PAIRS / "expected.json").read_text())


def xyxy(boxes):
    xywh = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_pairs_equal_the_official_union_matching(name):
    expected = EXPECTED[name]
    folder = OFFICIAL if name == "random" else PAIRS
    truth = read(folder / expected["ground_truth"])
    results = {record["ID"]: record for record in read(PAIRS / expected["detections"])}
    detections = [{"bodies": xyxy([box["box"] for box in results[r["ID"]]["dtboxes"]]),
                   "heads": xyxy([box["hbox"] for box in results[r["ID"]]["dtboxes"]]),
                   "scores": np.array([box["score"] for box in results[r["ID"]]["dtboxes"]])} for r in truth]
    sizes = [(results[r["ID"]]["height"], results[r["ID"]]["width"]) for r in truth]
    got = evaluate_crowdhuman_pairs(detections, [pair_ground_truth(r) for r in truth], sizes)
    assert got["ap"] == pytest.approx(expected["ap"], abs=1e-12)
    assert got["mr"] == pytest.approx(expected["mr"], abs=1e-12)
    assert got["num_detections"] == expected["num_detections"]
    assert got["num_annotations"] == expected["num_annotations"]


def test_a_later_person_must_beat_the_best_body_iou_with_its_head_too():
    # Detection 0 passes 0.5 with both people; person 1 has the higher body IoU (0.8) but its head
    # IoU (0.55) does not exceed person 0's body IoU (0.6): person 0 is kept, and detection 1 can
    # then take person 1. Taking the highest body IoU would leave detection 1 without a match.
    body = np.array([[0.6, 0.8], [0.1, 0.7]])
    head = np.array([[0.9, 0.55], [0.0, 0.9]])
    matched, dropped = compare_caltech_union(body, head, np.array([False, True]))
    assert matched.tolist() == [0, 1] and dropped.tolist() == [False, False]
    matched, dropped = compare_caltech_union(body[:, :1], head[:, :1], np.array([False, True]))
    assert matched.tolist() == [0, -1] and dropped.tolist() == [False, True]


def test_a_person_with_an_ignored_head_is_not_a_valid_pair():
    record = {"gtboxes": [
        {"tag": "person", "fbox": [0, 0, 10, 20], "hbox": [2, 0, 5, 5]},
        {"tag": "person", "fbox": [20, 0, 10, 20], "hbox": [22, 0, 5, 5], "head_attr": {"ignore": 1}},
        {"tag": "person", "fbox": [40, 0, 10, 20], "hbox": [42, 0, 5, 5], "extra": {"ignore": 1}},
        {"tag": "mask", "fbox": [60, 0, 10, 20], "hbox": [60, 0, 10, 20]}]}
    people = pair_ground_truth(record)
    assert people["valid"].tolist() == [True, False, False, False]
    assert people["bodies"][1].tolist() == [20, 0, 30, 20] and people["heads"][0].tolist() == [2, 0, 7, 5]
