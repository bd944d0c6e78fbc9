"""A person-triplet model with a head class: heads as rows of their own, their targets, how persons
take their head from the head detections, and how the heads are scored.

Expected values are worked out by hand (boxes, IoUs) or by a plain loop over detections written here,
never by the vectorised code under test.
"""

import numpy as np
import pytest
import torch

from retinanet.box_coder import BoxCoder
from retinanet.data.crowdhuman_people import person_annotation
from retinanet.errors import UserError
from retinanet.evaluation.crowdhuman import eval_ap
from retinanet.evaluation.person_triplets import (
    detected_head_class,
    evaluate_person_triplets,
)
from retinanet.losses import build_targets
from retinanet.model import RetinaNet
from retinanet.postprocess import attach_heads
from tests.helpers import one_image_people, person_gtbox, randomise_heads, xywh_to_corners
from tests.test_person_triplets_core import hand_encode, hand_iou

WHERE = "gt.odgt:1"


def test_person_annotation_adds_every_head_as_a_row_of_its_own():
    record = {"gtboxes": [
        person_gtbox([10, 10, 40, 80], [10, 10, 40, 80], [20, 10, 15, 15]),
        # head flagged ignore: the person keeps it (not trained), the head class gets an ignore region
        person_gtbox([60, 10, 40, 80], [60, 20, 30, 60], [70, 10, 15, 15], head_attr={"ignore": 1}),
        # an ignored person is an ignore region; its head is still a head, as the plain converter has it
        person_gtbox([120, 10, 30, 60], [120, 10, 30, 60], [125, 10, 10, 10], extra={"ignore": 1}),
        # a head outside the image is no head row
        person_gtbox([160, 0, 30, 60], [160, 0, 30, 60], [160, -20, 10, 15]),
        {"tag": "mask", "fbox": [0, 90, 20, 10]},
    ]}
    plain = person_annotation(record, (100, 200), WHERE)
    annotation = person_annotation(record, (100, 200), WHERE, heads=True)
    assert annotation["labels"].tolist() == [0, 0, 0, 1, 1]
    # the people's rows are exactly what a model without heads trains on
    for key in ("boxes", "visible_boxes", "head_boxes", "head_valid"):
        assert annotation[key][:3].tolist() == plain[key].tolist()
    assert annotation["boxes"][3:].tolist() == [[20, 10, 35, 25], [125, 10, 135, 20]]
    assert annotation["visible_boxes"][3:].tolist() == annotation["boxes"][3:].tolist()
    assert annotation["head_boxes"][3:].tolist() == annotation["boxes"][3:].tolist()
    assert annotation["visible_valid"].tolist() == [True, True, True, False, False]
    assert annotation["head_valid"].tolist() == [True, False, False, False, False]
    assert annotation["ignore"].tolist() == [[120, 10, 150, 70], [0, 90, 20, 100], [70, 10, 85, 25]]
    assert annotation["ignore_labels"].tolist() == [-1, -1, 1]


def test_a_head_row_trains_its_box_from_the_anchor_and_nothing_else():
    person, head = [0.0, 0.0, 32.0, 64.0], [10.0, 2.0, 22.0, 14.0]
    # anchor 0 sits on the person, anchor 1 on the head (IoU 12*12 / 16*16 = 0.5625), anchor 2 far away
    anchors = torch.tensor([[0.0, 0.0, 32.0, 64.0], [8.0, 0.0, 24.0, 16.0], [100.0, 100.0, 116.0, 116.0]])
    target = {"boxes": torch.tensor([person, head]), "labels": torch.tensor([0, 1]),
              "visible_boxes": torch.tensor([person, head]), "head_boxes": torch.tensor([head, head]),
              "visible_valid": torch.tensor([True, False]), "head_valid": torch.tensor([True, False])}
    assert hand_iou(anchors[1].tolist(), head) == pytest.approx(0.5625)
    labels, weights, ignored, box_targets, box_weights = build_targets([target], anchors, 2, BoxCoder(),
                                                                       boxes_per_anchor=3)
    assert labels[0].tolist() == [0, 1, -1] and ignored is None
    assert box_weights[0].tolist() == [[True, True, True], [True, False, False], [False, False, False]]
    assert box_targets[0, 1, :4].tolist() == pytest.approx(hand_encode(head, anchors[1].tolist()), abs=1e-5)
    assert box_targets[0, 0, :4].tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0], abs=1e-6)


def test_head_rows_need_the_triplet_keys_only_once():
    # a target without visible_valid (hand-made, or from before head rows) trains every visible box
    person = [0.0, 0.0, 32.0, 64.0]
    target = {"boxes": torch.tensor([person]), "labels": torch.tensor([0]), "visible_boxes": torch.tensor([person]),
              "head_boxes": torch.tensor([[10.0, 2.0, 22.0, 14.0]]), "head_valid": torch.tensor([False])}
    *_, box_weights = build_targets([target], torch.tensor([person]), 1, BoxCoder(), boxes_per_anchor=3)
    assert box_weights[0].tolist() == [[True, True, False]]


def _row(full=(0, 0, 0, 0), visible=(0, 0, 0, 0), head=(0, 0, 0, 0)):
    return [*full, *visible, *head]


def test_attach_heads_by_hand():
    # image 0: persons P1, P2, P4; heads H1..H4. image 1: person P3 and no head.
    rows = [
        ("P1", 0, 0, 0.95, _row((0, 0, 40, 100), (0, 0, 40, 100), (10, 10, 20, 20))),
        ("H1", 0, 1, 0.90, _row((12, 10, 22, 20), (1, 1, 2, 2), (3, 3, 4, 4))),  # IoU 80/120 with P1's head
        ("H2", 0, 1, 0.30, _row((10, 12, 20, 22))),  # IoU 80/120 too, lower score
        ("P2", 0, 0, 0.20, _row((45, 40, 70, 100), (45, 40, 70, 100), (50, 50, 60, 60))),  # overlaps no head
        ("H3", 0, 1, 0.10, _row((30, 30, 40, 40))),  # IoU 1 with P4's head, score 0.1: 0.1
        ("H4", 0, 1, 0.85, _row((32, 30, 42, 40))),  # IoU 80/120 with P4's head: 0.567, wins
        ("P4", 0, 0, 0.05, _row((25, 25, 45, 90), (25, 25, 45, 90), (30, 30, 40, 40))),
        ("P3", 1, 0, 0.50, _row((0, 0, 40, 100), (0, 0, 40, 100), (12, 10, 22, 20))),  # H1's place, other image
    ]
    boxes = torch.tensor([r[4] for r in rows], dtype=torch.float32)
    image_idx = torch.tensor([r[1] for r in rows])
    labels = torch.tensor([r[2] for r in rows])
    scores = torch.tensor([r[3] for r in rows])
    rank = torch.tensor([0, 1, 2, 3, 4, 5, 6, 0])
    out = attach_heads(boxes, scores, labels, image_idx, rank, batch_size=2, max_detections=8, head_class=1)
    by_name = {r[0]: out[i] for i, r in enumerate(rows)}
    assert by_name["P1"][8:].tolist() == [12, 10, 22, 20]  # H1: 0.667 * 0.9 beats H2's 0.667 * 0.3
    assert by_name["P4"][8:].tolist() == [32, 30, 42, 40]  # H4: IoU x score, not IoU alone
    assert by_name["P2"][8:].tolist() == [50, 50, 60, 60]  # no overlapping head: its own
    assert by_name["P3"][8:].tolist() == [12, 10, 22, 20]  # the heads of another image are not its
    for name in ("P1", "P2", "P3", "P4"):  # full and visible boxes untouched
        assert by_name[name][:8].tolist() == boxes[[r[0] for r in rows].index(name), :8].tolist()
    assert by_name["H1"].tolist() == [12, 10, 22, 20] * 3  # a head's three boxes are its box
    assert out.shape == boxes.shape


def _expected_heads(detections, head_class):
    """Each person's head, by a loop over the head detections of its image: IoU x score, IoU > 0."""
    expected = []
    for image in detections:
        heads = [(box, score) for box, score, label in zip(image["boxes"].tolist(), image["scores"].tolist(),
                                                            image["labels"].tolist()) if label == head_class]
        for k in range(len(image["scores"])):
            if int(image["labels"][k]) == head_class:
                continue
            regressed = image["head_boxes"][k].tolist()
            best, chosen = 0.0, regressed
            for box, score in heads:
                area = (box[2] - box[0]) * (box[3] - box[1])
                own = max(regressed[2] - regressed[0], 0) * max(regressed[3] - regressed[1], 0)
                if area <= 0 or own <= 0:
                    continue
                value = hand_iou(regressed, box) * score
                if value > best:
                    best, chosen = value, box
            expected.append(chosen)
    return expected


def test_a_model_with_a_head_class_gives_each_person_its_best_head_detection():
    torch.manual_seed(3)
    model = RetinaNet(2, depth=18, feature_size=16, person_triplets=True, score_threshold=0.2).eval()
    randomise_heads(model, class_bias=-1.0)
    assert model.head_class == 1 and model.model_args()["num_classes"] == 2
    images = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        model.head_class = None  # the same detections with the regressed heads left as they are
        regressed = model(images)
        model.head_class = 1
        attached = model(images)
    expected = _expected_heads(regressed, head_class=1)
    got, moved = [], 0
    for before, after in zip(regressed, attached):
        assert torch.equal(before["scores"], after["scores"]) and torch.equal(before["labels"], after["labels"])
        heads = after["labels"] == 1
        assert heads.any() and (~heads).any()
        for key in ("visible_boxes", "head_boxes"):
            assert torch.equal(after[key][heads], after["boxes"][heads])
        assert torch.equal(after["boxes"], before["boxes"])
        got.extend(after["head_boxes"][~heads].tolist())
        moved += int((after["head_boxes"][~heads] != before["head_boxes"][~heads]).any(dim=1).sum())
    assert np.allclose(got, expected, atol=1e-4)
    assert moved > 10  # the test sees heads being taken, not only regressed heads kept


def test_a_triplet_model_has_at_most_a_head_class():
    with pytest.raises(UserError, match=r"one class \(person\) or two \(person, head\)"):
        RetinaNet(3, depth=18, feature_size=16, person_triplets=True)
    assert RetinaNet(1, depth=18, feature_size=16, person_triplets=True).head_class is None
    assert RetinaNet(2, depth=18, feature_size=16).head_class is None  # a plain model's classes are its own


def test_heads_of_a_head_class_are_scored_as_a_plain_models_heads(tmp_path):
    # A and B stand apart; C's head is flagged ignore.
    people = [person_gtbox([10, 10, 40, 90], [10, 10, 40, 90], [20, 10, 12, 14]),
              person_gtbox([60, 10, 40, 90], [60, 10, 40, 90], [70, 10, 12, 14]),
              person_gtbox([120, 10, 40, 90], [120, 10, 40, 90], [130, 10, 12, 14], head_attr={"ignore": 1})]
    truth = one_image_people(tmp_path, people)
    fulls = [xywh_to_corners(p["fbox"]) for p in people]
    heads = [xywh_to_corners(p["hbox"]) for p in people]
    # persons A, B, C with B's head box on A's head (wrong); the head class finds A's and B's heads,
    # plus a false head far away that scores above them.
    detections = {"boxes": np.array([*fulls, [170, 100, 180, 110], heads[0], heads[1]], np.float32),
                  "visible_boxes": np.array([*fulls, [170, 100, 180, 110], heads[0], heads[1]], np.float32),
                  "head_boxes": np.array([heads[0], heads[0], heads[2], [170, 100, 180, 110], heads[0], heads[1]],
                                         np.float32),
                  "scores": np.array([0.9, 0.8, 0.7, 0.95, 0.6, 0.5], np.float32),
                  "labels": np.array([0, 0, 0, 1, 1, 1])}
    assert detected_head_class([detections], ["person", "head"]) == 1
    assert detected_head_class([detections], ["person"]) is None
    assert detected_head_class([{**detections, "labels": np.zeros(6, np.int64)}], ["person", "head"]) is None
    results = evaluate_person_triplets([detections], truth, [(120, 200)], head_class=1)
    # head class: ranking false, A, B over 2 heads (C's ignored)
    assert results["head"]["num_annotations"] == 2
    assert results["head"]["ap"] == pytest.approx(eval_ap(np.array([False, True, True]), 2)[0])
    # the persons' heads: A right, B wrong (A's head, already taken), C in an ignore region
    assert results["person_head"]["ap"] == pytest.approx(eval_ap(np.array([True, False]), 2)[0])
    # full bodies: the head detections are not persons
    assert results["full"]["num_detections"] == 3
    assert results["full"]["ap"] == pytest.approx(eval_ap(np.ones(3, bool), 3)[0])
    assert results["overlapped"]["num_people"] == 3 and results["overlapped"]["recall"] == 1.0
    # every detection a person (no head class): the head detections count as persons and miss
    everyone = evaluate_person_triplets([detections], truth, [(120, 200)])
    assert "person_head" not in everyone and everyone["full"]["num_detections"] == 6



def test_pictures_draw_a_lone_head_detection_and_not_a_persons_head_twice():
    from retinanet.visualization import draw_detections

    person = [20, 20, 60, 120]
    taken, lone = [30, 60, 45, 75], [120, 60, 135, 75]  # below the person caption
    def detections(*head_rows):
        rows = [person, *head_rows]
        return {"boxes": np.array(rows, np.float32), "visible_boxes": np.array(rows, np.float32),
                "head_boxes": np.array([taken, *head_rows], np.float32),
                "scores": np.linspace(0.9, 0.5, len(rows)).astype(np.float32),
                "labels": np.array([0] + [1] * len(head_rows))}
    image = np.full((140, 200, 3), 255, np.uint8)
    alone = draw_detections(image, detections(), ["person", "head"])
    # the head the person took is drawn once, as the person's head
    assert np.array_equal(draw_detections(image, detections(taken), ["person", "head"]), alone)
    # a head no person took is drawn, and nowhere but around its box (its caption sits above it)
    with_lone = draw_detections(image, detections(lone), ["person", "head"])
    changed = np.argwhere((with_lone != alone).any(axis=2))
    assert len(changed) > 0
    assert changed[:, 1].min() >= lone[0] - 2 and changed[:, 0].max() <= lone[3] + 2
