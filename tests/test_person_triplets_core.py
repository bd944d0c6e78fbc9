"""Person triplets (full body, visible body, head per person) on hand-made people: targets, the
suppression box of NMS, the model's arguments and outputs, CrowdHuman annotations and overlapped recall.

Every expected delta is computed here with the BoxCoder formula written out in plain Python floats
(``hand_encode``), never with ``BoxCoder`` itself; a head is encoded from the head-sized box at the
top of its anchor (``hand_head_prior``, box_coder.HEAD_PRIOR written out).
"""
import math

import numpy as np
import pytest
import torch

from retinanet import postprocess, state_dicts
from retinanet.anchors import AnchorGenerator
from retinanet.box_coder import BoxCoder
from retinanet.data.crowdhuman_people import person_annotation
from retinanet.errors import UserError
from retinanet.evaluation import person_triplets
from retinanet.evaluation.crowd_overlaps import overlapped_recall, overlapped_subset
from retinanet.losses import build_targets, retinanet_loss
from retinanet.model import PERSON_BOX_KINDS, RetinaNet
from retinanet.postprocess import flat_detections, split_by_image
from tests.helpers import person_gtbox, save_model_checkpoint

STD = (0.1, 0.1, 0.2, 0.2)


def hand_encode(box, anchor):
    """dx = (gx - ax) / aw / 0.1, dy likewise, dw = log(gw / aw) / 0.2, dh likewise; plain floats."""
    ax1, ay1, ax2, ay2 = anchor
    gx1, gy1, gx2, gy2 = box
    aw, ah = ax2 - ax1, ay2 - ay1
    gw, gh = gx2 - gx1, gy2 - gy1
    ax, ay = ax1 + aw / 2, ay1 + ah / 2
    gx, gy = gx1 + gw / 2, gy1 + gh / 2
    return [(gx - ax) / aw / STD[0], (gy - ay) / ah / STD[1], math.log(gw / aw) / STD[2], math.log(gh / ah) / STD[3]]


def hand_head_prior(anchor):
    """The head reference box of an anchor: centred across, centre 0.4 heights above the anchor's, 0.35 x 0.2 of it."""
    x1, y1, x2, y2 = anchor
    w, h = x2 - x1, y2 - y1
    cx, cy = x1 + 0.5 * w, y1 + 0.1 * h
    return (cx - 0.175 * w, cy - 0.1 * h, cx + 0.175 * w, cy + 0.1 * h)


def hand_reference(kind, anchor):
    return hand_head_prior(anchor) if kind == "head" else anchor


def hand_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
    return inter / (area(a) + area(b) - inter)


# Person A in front; person B stands behind A: full bodies at IoU 3000 / 5000 = 0.6, B's visible body
# is the 10 px strip right of A, the two heads are apart (IoU 0). B's head is flagged invalid.
PERSON_A = {"full": (10.0, 10.0, 50.0, 110.0), "visible": (10.0, 10.0, 50.0, 110.0), "head": (20.0, 10.0, 40.0, 30.0)}
PERSON_B = {"full": (20.0, 10.0, 60.0, 110.0), "visible": (50.0, 10.0, 60.0, 110.0), "head": (44.0, 10.0, 60.0, 26.0)}
PEOPLE = (PERSON_A, PERSON_B)

# (anchor, index of the person it regresses or None): full-body IoU with A and B in the comment.
TARGET_ANCHORS = [
    ((10.0, 10.0, 50.0, 110.0), 0),  # A's full box: 1.0 / 0.6 -> A
    ((20.0, 10.0, 60.0, 110.0), 1),  # B's full box: 0.6 / 1.0 -> B
    ((12.0, 20.0, 44.0, 100.0), 0),  # 2560 / 4000 = 0.64 / 1920 / 4640 = 0.414 -> A
    ((24.0, 0.0, 64.0, 100.0), 1),  # 2340 / 5660 = 0.413 / 3240 / 4760 = 0.681 -> B
    ((-5.0, 10.0, 35.0, 110.0), None),  # 2500 / 5500 = 0.455 / 0.231: between the thresholds
    ((100.0, 100.0, 140.0, 200.0), None),  # overlaps nobody: background
]


def triplet_target(people, head_valid):
    return {
        "boxes": torch.tensor([p["full"] for p in people]).reshape(-1, 4),
        "labels": torch.zeros(len(people), dtype=torch.int64),
        "visible_boxes": torch.tensor([p["visible"] for p in people]).reshape(-1, 4),
        "head_boxes": torch.tensor([p["head"] for p in people]).reshape(-1, 4),
        "head_valid": torch.tensor(head_valid, dtype=torch.bool).reshape(-1),
    }


def test_hand_made_people_overlap_as_described():
    assert hand_iou(PERSON_A["full"], PERSON_B["full"]) == pytest.approx(0.6)
    assert hand_iou(PERSON_A["head"], PERSON_B["head"]) == 0.0
    assert hand_iou(PERSON_A["visible"], PERSON_B["visible"]) == 0.0
    expected_ious = [(1.0, 0.6), (0.6, 1.0), (0.64, 1920 / 4640), (2340 / 5660, 3240 / 4760),
                     (2500 / 5500, 1500 / 6500), (0.0, 0.0)]
    for (anchor, _), ious in zip(TARGET_ANCHORS, expected_ious):
        assert (hand_iou(anchor, PERSON_A["full"]), hand_iou(anchor, PERSON_B["full"])) == pytest.approx(ious)


def build_triplet_targets():
    anchors = torch.tensor([anchor for anchor, _ in TARGET_ANCHORS])
    targets = [triplet_target(PEOPLE, [True, False]), triplet_target((), [])]  # the second image has nobody
    return anchors, targets, build_targets(targets, anchors, 1, BoxCoder(), boxes_per_anchor=3)


def test_triplet_targets_of_people_one_behind_the_other():
    anchors, _, (anchor_labels, anchor_weights, class_ignored, box_targets, box_weights) = build_triplet_targets()
    num_anchors = len(TARGET_ANCHORS)
    assert anchor_labels.tolist() == [[0, 0, 0, 0, -1, -1], [-1] * num_anchors]
    assert anchor_weights.tolist() == [[True, True, True, True, False, True], [True] * num_anchors]
    assert class_ignored is None
    assert box_targets.shape == (2, num_anchors, 12) and box_weights.shape == (2, num_anchors, 3)
    # Positive anchors train full and visible always, the head only for A (B's head is invalid).
    assert box_weights[0].tolist() == [[True, True, True], [True, True, False], [True, True, True],
                                       [True, True, False], [False, False, False], [False, False, False]]
    assert not box_weights[1].any()
    assert torch.equal(box_targets[1], torch.zeros(num_anchors, 12))
    for a, (anchor, person) in enumerate(TARGET_ANCHORS):
        if person is None:
            continue
        for s, kind in enumerate(PERSON_BOX_KINDS):
            expected = torch.tensor(hand_encode(PEOPLE[person][kind], hand_reference(kind, anchor)))
            assert torch.allclose(box_targets[0, a, 4 * s:4 * s + 4], expected, atol=1e-5), (a, kind)


def test_triplet_targets_spot_values():
    """A few deltas written out as numbers: the same formula can't hide a shared mistake here."""
    _, _, (_, _, _, box_targets, _) = build_triplet_targets()
    # Anchor 0 is A's full box (also its visible box): both deltas zero. A's head (20, 10, 40, 30),
    # centre (30, 20), 20 x 20, against the anchor's head prior: centre (30, 10 + 0.1 * 100), 14 x 20.
    assert box_targets[0, 0, :8].tolist() == [0.0] * 8
    head = [0.0, 0.0, math.log(20 / 14) / 0.2, 0.0]
    assert box_targets[0, 0, 8:].tolist() == pytest.approx(head, abs=1e-5)
    # Anchor 1 is B's full box (20, 10, 60, 110); B's visible strip (50, 10, 60, 110): centre x 55 vs 40.
    assert box_targets[0, 1, 4:8].tolist() == pytest.approx([3.75, 0.0, math.log(0.25) / 0.2, 0.0], abs=1e-5)
    # Anchor 2 (12, 20, 44, 100), 32 x 80 centred (28, 60), regresses A's full body (40 x 100 at (30, 60)).
    assert box_targets[0, 2, :4].tolist() == pytest.approx([0.625, 0.0, math.log(1.25) / 0.2, math.log(1.25) / 0.2],
                                                           abs=1e-5)


def test_triplet_loss_with_perfect_deltas_and_an_ignored_head():
    anchors, targets, (_, _, _, box_targets, _) = build_triplet_targets()
    logits = torch.zeros(2, len(TARGET_ANCHORS), 1)
    perfect = retinanet_loss(logits, box_targets.clone(), anchors, targets)
    assert perfect["regression"].item() == pytest.approx(0.0, abs=1e-6)

    # Anchors 1 and 3 regress B, whose head is not trained: any head delta costs nothing.
    wrong_invalid_head = box_targets.clone()
    wrong_invalid_head[0, [1, 3], 8:] += 1.0
    assert retinanet_loss(logits, wrong_invalid_head, anchors, targets)["regression"].item() == pytest.approx(
        0.0, abs=1e-6)
    # Off-positive anchors cost nothing either.
    wrong_negatives = box_targets.clone()
    wrong_negatives[:, 4:] += 1.0
    assert retinanet_loss(logits, wrong_negatives, anchors, targets)["regression"].item() == pytest.approx(
        0.0, abs=1e-6)

    # A's head on anchors 0 and 2, each coordinate off by 1: smooth L1 (beta 1/9) = 1 - 1/18 = 17/18,
    # 8 coordinates over 4 * 4 positives in image 0, image 1 has none: mean (8 * 17/18 / 16, 0) = 17/72.
    wrong_valid_head = box_targets.clone()
    wrong_valid_head[0, [0, 2], 8:] += 1.0
    loss = retinanet_loss(logits, wrong_valid_head, anchors, targets)
    assert loss["regression"].item() == pytest.approx(17 / 72, rel=1e-5)
    # A visible box off by 1 on one anchor of B: 4 * 17/18 / 16 / 2 images = 17/144.
    wrong_visible = box_targets.clone()
    wrong_visible[0, 3, 4:8] += 1.0
    assert retinanet_loss(logits, wrong_visible, anchors, targets)["regression"].item() == pytest.approx(
        17 / 144, rel=1e-5)


def test_triplet_targets_need_the_triplet_keys():
    anchors = torch.tensor([anchor for anchor, _ in TARGET_ANCHORS])
    plain = {"boxes": torch.tensor([PERSON_A["full"]]), "labels": torch.tensor([0])}
    with pytest.raises(ValueError, match="person-triplet targets"):
        build_targets([plain], anchors, 1, BoxCoder(), boxes_per_anchor=3)


# --- NMS on the suppression box -------------------------------------------------------------------

# A, B standing behind A, and a duplicate of A shifted by 1 px with a lower score.
DUPLICATE_A = {kind: tuple(v + 1.0 for v in box) for kind, box in PERSON_A.items()}
NMS_PEOPLE = (PERSON_A, PERSON_B, DUPLICATE_A)
NMS_LOGITS = (2.0, 1.0, 0.0)


def nms_inputs():
    """One level, one image, one class: the anchors are the full boxes (zero full-body deltas) and the
    visible and head deltas are hand-encoded against them."""
    anchors = torch.tensor([person["full"] for person in NMS_PEOPLE])
    deltas = torch.tensor([[0.0] * 4 + hand_encode(p["visible"], p["full"])
                           + hand_encode(p["head"], hand_head_prior(p["full"]))
                           for p in NMS_PEOPLE])[None]
    logits = torch.tensor(NMS_LOGITS)[None, :, None]
    return [logits], [deltas], [anchors]


def test_nms_people_overlap_as_described():
    # The duplicate overlaps A in every box; B overlaps A by its full body only.
    for kind in PERSON_BOX_KINDS:
        assert hand_iou(PERSON_A[kind], DUPLICATE_A[kind]) > 0.8
    assert hand_iou(PERSON_A["full"], PERSON_B["full"]) > 0.5
    assert hand_iou(PERSON_A["head"], PERSON_B["head"]) < 0.5
    assert hand_iou(PERSON_A["visible"], PERSON_B["visible"]) < 0.5


@pytest.mark.parametrize("suppression_box, survivors", [(2, [0, 1]), (1, [0, 1]), (0, [0])])
def test_suppression_box_decides_who_survives(suppression_box, survivors):
    level_logits, level_deltas, level_anchors = nms_inputs()
    boxes, scores, labels, image_idx = flat_detections(
        level_logits, level_deltas, level_anchors, BoxCoder(), torch.tensor([[128.0, 128.0]]),
        suppression_box=suppression_box, boxes_per_anchor=3)
    assert boxes.shape == (len(survivors), 12)
    expected = torch.tensor([[*NMS_PEOPLE[i]["full"], *NMS_PEOPLE[i]["visible"], *NMS_PEOPLE[i]["head"]]
                             for i in survivors])
    assert torch.allclose(boxes, expected, atol=1e-4)
    assert scores.tolist() == pytest.approx([1 / (1 + math.exp(-NMS_LOGITS[i])) for i in survivors])
    assert labels.tolist() == [0] * len(survivors) and image_idx.tolist() == [0] * len(survivors)

    (detections,) = split_by_image(boxes, scores, labels, image_idx, batch_size=1)
    assert set(detections) == {"boxes", "visible_boxes", "head_boxes", "scores", "labels"}
    for key, kind in (("boxes", "full"), ("visible_boxes", "visible"), ("head_boxes", "head")):
        assert torch.allclose(detections[key], torch.tensor([NMS_PEOPLE[i][kind] for i in survivors]), atol=1e-4)


def test_suppression_compares_heads_only_within_an_image():
    """Two images, each with all three candidates: NMS on heads keeps A and B in each, never across."""
    (logits,), (deltas,), anchors = nms_inputs()
    flat = flat_detections([logits.repeat(2, 1, 1)], [deltas.repeat(2, 1, 1)], anchors, BoxCoder(),
                           torch.tensor([[128.0, 128.0]]), suppression_box=2, boxes_per_anchor=3)
    per_image = split_by_image(*flat, batch_size=2)
    for detections in per_image:
        assert torch.allclose(detections["head_boxes"], torch.tensor([PERSON_A["head"], PERSON_B["head"]]), atol=1e-4)
        assert torch.allclose(detections["visible_boxes"], torch.tensor([PERSON_A["visible"], PERSON_B["visible"]]),
                              atol=1e-4)


def test_triplet_boxes_are_clipped_each_to_the_image():
    """Decoded boxes are clipped column group by column group: a head sticking out of a 100 x 55 image."""
    anchor = (10.0, 10.0, 50.0, 90.0)
    head = (40.0, 5.0, 70.0, 35.0)  # right edge 70 beyond the image width 55
    deltas = torch.tensor([[[0.0] * 4 + hand_encode(anchor, anchor) + hand_encode(head, hand_head_prior(anchor))]])
    boxes, _, _, _ = flat_detections([torch.zeros(1, 1, 1)], [deltas], [torch.tensor([anchor])], BoxCoder(),
                                     torch.tensor([[100.0, 55.0]]), suppression_box=2, boxes_per_anchor=3)
    assert torch.allclose(boxes, torch.tensor([[*anchor, *anchor, 40.0, 5.0, 55.0, 35.0]]), atol=1e-4)


# --- the model: arguments, state dicts, outputs ---------------------------------------------------


def tiny_model(**kwargs):
    return RetinaNet(depth=18, feature_size=16, **kwargs)


def test_model_args_and_inferred_args_round_trip():
    triplets = tiny_model(num_classes=1, person_triplets=True, suppression_box="head")
    assert triplets.model_args() == {"num_classes": 1, "depth": 18, "feature_size": 16, "person_triplets": True,
                                     "suppression_box": "head"}
    plain = tiny_model(num_classes=2)
    assert plain.model_args() == {"num_classes": 2, "depth": 18, "feature_size": 16}

    found = state_dicts.infer_model_args(triplets.state_dict(), "triplets.pt")
    assert found == {"depth": 18, "num_classes": 1, "feature_size": 16, "person_triplets": True}
    assert state_dicts.infer_model_args(plain.state_dict(), "plain.pt") == {"depth": 18, "num_classes": 2,
                                                                          "feature_size": 16}
    # The box output conv holds 9 anchors x 12 values.
    assert triplets.state_dict()["regressionModel.output.bias"].shape == (9 * 12,)
    rebuilt = RetinaNet(**triplets.model_args())
    assert rebuilt.person_triplets and rebuilt.suppression_box == "head" and rebuilt.boxes_per_anchor == 3


def test_constants_agree_across_modules():
    assert state_dicts.ANCHORS_PER_LOCATION == AnchorGenerator().num_anchors_per_location
    assert postprocess.TRIPLET_BOX_KEYS == tuple(person_triplets.DETECTION_KEYS[k] for k in PERSON_BOX_KINDS)
    assert person_triplets.PERSON_BOX_KINDS == PERSON_BOX_KINDS


def test_triplet_model_rejects_bad_arguments():
    with pytest.raises(UserError, match="one class"):
        RetinaNet(3, depth=18, feature_size=16, person_triplets=True)
    with pytest.raises(UserError, match="suppression box"):
        RetinaNet(1, depth=18, feature_size=16, person_triplets=True, suppression_box="torso")


def test_infer_model_args_rejects_other_box_counts():
    state = dict(tiny_model(num_classes=1).state_dict())
    state["regressionModel.output.bias"] = torch.zeros(9 * 8)
    with pytest.raises(UserError, match="8 box values per anchor"):
        state_dicts.infer_model_args(state, "odd.pt")


def test_triplet_model_detections_carry_three_boxes():
    model = tiny_model(num_classes=1, person_triplets=True, score_threshold=0.0).eval()
    with torch.no_grad():
        bias = model.regressionModel.output.bias.view(9, 12)
        bias[:, 10:12] = -5.0  # head: the anchor shrunk by exp(-1) about its centre; full, visible: the anchor
    images = torch.rand(2, 3, 64, 64)
    outputs = model(images)
    assert len(outputs) == 2
    for detections in outputs:
        assert set(detections) == {"boxes", "visible_boxes", "head_boxes", "scores", "labels"}
        count = detections["scores"].shape[0]
        assert 0 < count <= model.max_detections
        for key in postprocess.TRIPLET_BOX_KEYS:
            assert detections[key].shape == (count, 4)
        assert detections["labels"].shape == (count,) and not detections["labels"].any()
        full, visible, head = detections["boxes"], detections["visible_boxes"], detections["head_boxes"]
        assert torch.equal(visible, full)
        # Each head lies inside its full box, and is smaller wherever the anchor was not cut by the image.
        assert (head[:, :2] >= full[:, :2] - 1e-4).all() and (head[:, 2:] <= full[:, 2:] + 1e-4).all()
        area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        assert (area(head) < 0.5 * area(full)).any()
        assert (full[:, 0::2] >= 0).all() and (full[:, 2] <= 64).all() and (full[:, 3] <= 64).all()


def test_plain_model_detections_have_one_box():
    model = tiny_model(num_classes=1, score_threshold=0.0).eval()
    (detections,) = model(torch.rand(1, 3, 64, 64))
    assert set(detections) == {"boxes", "scores", "labels"}
    assert detections["boxes"].shape[1] == 4


def test_load_weights_changes_variant_only_when_allowed(tmp_path):
    plain = tiny_model(num_classes=1)
    with torch.no_grad():
        for parameter in plain.parameters():
            parameter.add_(0.5)  # weights no fresh model has
    path = str(tmp_path / "plain.pt")
    save_model_checkpoint(path, plain, ["person"])
    triplets = tiny_model(num_classes=1, person_triplets=True)
    with pytest.raises(UserError, match="plain RetinaNet"):
        state_dicts.load_weights(triplets, path, ["person"])

    initial_box_output = triplets.regressionModel.output.weight.detach().clone()
    logs = []
    report = state_dicts.load_weights(triplets, path, ["person"], allow_class_change=True, log=logs.append)
    assert report == {"copied": ["person"], "initialised": []}
    assert any("box output layer initialised" in line for line in logs)
    assert torch.equal(triplets.fpn.P5_1.weight, plain.fpn.P5_1.weight)
    assert torch.equal(triplets.regressionModel.conv1.weight, plain.regressionModel.conv1.weight)
    assert torch.equal(triplets.classificationModel.output.bias, plain.classificationModel.output.bias)
    assert torch.equal(triplets.regressionModel.output.weight, initial_box_output)

    triplet_path = str(tmp_path / "triplets.pt")
    save_model_checkpoint(triplet_path, triplets, ["person"])
    with pytest.raises(UserError, match="person-triplet RetinaNet"):
        state_dicts.load_weights(tiny_model(num_classes=1), triplet_path, ["person"])


# --- CrowdHuman records -> triplet annotations ------------------------------------------------------

WHERE = "annotation_train.odgt:7"


def test_person_annotation_ignore_rules_and_clipping():
    record = {"ID": "x", "gtboxes": [
        # A mask region partly outside the 200 x 100 image: an ignore region, clipped.
        {"tag": "mask", "fbox": [150, 50, 100, 80]},
        # An ignored person: an ignore region by its full box, clipped at the left.
        person_gtbox([-10, 5, 30, 40], [0, 5, 20, 40], [0, 5, 10, 10], extra={"ignore": 1}),
        # A person whose head is flagged ignore: kept, head not valid (its box still given).
        person_gtbox([20, 10, 40, 80], [25, 10, 30, 60], [30, 10, 15, 15], head_attr={"ignore": 1}, extra={}),
        # A person with no hbox: kept, head not valid.
        person_gtbox([60, 10, 30, 70], [60, 10, 30, 70]),
        # Full box extending outside the image: clipped; its head is fine.
        person_gtbox([180, 20, 40, 100], [185, 30, 10, 50], [185, 20, 10, 10], head_attr={"ignore": 0}),
        # Full box half a pixel inside the image: dropped (whatever its visible box says).
        person_gtbox([199.5, 10, 30, 40], [190, 10, 10, 40], [199.5, 10, 10, 10]),
        # Visible box half a pixel wide: dropped too.
        person_gtbox([60, 20, 30, 50], [70, 20, 0.5, 10], [65, 20, 10, 10]),
        # A mask region right of the image: nothing of it is left after clipping, so no ignore region.
        {"tag": "mask", "fbox": [250, 0, 20, 20]},
        # Head entirely above the image: kept, head not valid.
        person_gtbox([100, 0, 30, 60], [100, 0, 30, 60], [100, -20, 20, 15]),
    ]}
    annotation = person_annotation(record, (100, 200), WHERE)
    assert annotation["boxes"].tolist() == [[20, 10, 60, 90], [60, 10, 90, 80], [180, 20, 200, 100],
                                            [100, 0, 130, 60]]
    assert annotation["visible_boxes"].tolist() == [[25, 10, 55, 70], [60, 10, 90, 80], [185, 30, 195, 80],
                                                    [100, 0, 130, 60]]
    assert annotation["head_boxes"].tolist() == [[30, 10, 45, 25], [60, 10, 90, 80], [185, 20, 195, 30],
                                                 [100, 0, 120, 0]]
    assert annotation["head_valid"].tolist() == [False, False, True, False]
    assert annotation["labels"].tolist() == [0, 0, 0, 0]
    assert annotation["ignore"].tolist() == [[150, 50, 200, 100], [0, 5, 20, 45]]
    assert annotation["ignore_labels"].tolist() == [-1, -1]
    assert annotation["boxes"].dtype == np.float32 and annotation["head_boxes"].dtype == np.float32
    assert annotation["head_valid"].dtype == bool


def test_person_annotation_without_people():
    annotation = person_annotation({"gtboxes": [{"tag": "mask", "fbox": [0, 0, 10, 10]}]}, (50, 50), WHERE)
    assert annotation["boxes"].shape == (0, 4) and annotation["visible_boxes"].shape == (0, 4)
    assert annotation["head_boxes"].shape == (0, 4) and annotation["head_valid"].shape == (0,)
    assert annotation["ignore"].tolist() == [[0, 0, 10, 10]]


@pytest.mark.parametrize("fbox", [[1, 2, 3], [1, 2, 3, "4"], None, [1, 2, 3, float("nan")], [1, 2, 3, True]])
def test_person_annotation_rejects_a_bad_fbox(fbox):
    record = {"gtboxes": [person_gtbox([0, 0, 10, 10], [0, 0, 10, 10]), {"tag": "person", "fbox": fbox,
                                                                          "vbox": [0, 0, 10, 10]}]}
    with pytest.raises(UserError) as caught:
        person_annotation(record, (50, 50), WHERE)
    message = str(caught.value)
    assert WHERE in message and "'fbox'" in message and "gtbox 1" in message


def test_person_annotation_rejects_a_negative_size_and_an_unknown_tag():
    with pytest.raises(UserError, match="negative width"):
        person_annotation({"gtboxes": [person_gtbox([0, 0, -1, 10], [0, 0, 1, 1])]}, (50, 50), WHERE)
    with pytest.raises(UserError, match="unknown tag 'car'"):
        person_annotation({"gtboxes": [{"tag": "car", "fbox": [0, 0, 1, 1]}]}, (50, 50), WHERE)


# --- recall of overlapped people --------------------------------------------------------------------

# P0 and P1 overlap at full-body IoU 0.6 (P1 stands behind P0); P2 stands alone.
CROWD = np.array([[10, 10, 50, 110], [20, 10, 60, 110], [120, 10, 160, 110]], dtype=np.float64)
CROWD_TRUTH = {"boxes": CROWD, "labels": np.zeros(3, np.int64), "ignore": np.zeros((0, 4)),
               "ignore_labels": np.zeros(0, np.int64)}


def test_overlapped_recall_by_hand():
    detections = {
        # P1 exactly (IoU 0.6 with P0 too: the higher IoU wins), P2 shifted by 1 px, and a box on P0
        # of another class, which does not count.
        "boxes": np.array([[20, 10, 60, 110], [121, 11, 161, 111], [10, 10, 50, 110]], dtype=np.float64),
        "scores": np.array([0.9, 0.8, 0.95]),
        "labels": np.array([0, 0, 1]),
    }
    result = overlapped_recall([detections], [CROWD_TRUTH], [(120, 200)])
    # Of the overlapped people only P1 is found, by the first and only counted detection (the one on
    # P2 lies in an ignored box): no trapezoid for AP, miss rate 0.5 at every FPPI.
    assert result == {"overlapped_recall": 0.5, "num_overlapped": 2, "recall": pytest.approx(2 / 3),
                      "num_people": 3, "overlapped_ap": 0.0, "overlapped_mr": 0.5}


def test_overlapped_subset_ignores_the_people_standing_alone():
    truth = {**CROWD_TRUTH, "boxes": np.concatenate([CROWD, [[20, 10, 40, 30]]]), "labels": np.array([0, 0, 0, 1])}
    subset, = overlapped_subset([truth], [(120, 200)])
    assert subset["boxes"].tolist() == [[10, 10, 50, 110], [20, 10, 60, 110], [20, 10, 40, 30]]
    assert subset["labels"].tolist() == [0, 0, 1]  # another class stays as it is
    assert subset["ignore"].tolist() == [[120, 10, 160, 110]] and subset["ignore_labels"].tolist() == [0]


def test_overlapped_ap_and_mr_by_hand():
    # By score: P0, a false positive, P2, P1, P2 again. P2 stands alone, so both detections on it are
    # dropped: the ranking is hit, false positive, hit over the 2 overlapped people.
    detections = {"boxes": np.array([[10, 10, 50, 110], [165, 60, 195, 110], [120, 10, 160, 110],
                                     [20, 10, 60, 110], [121, 11, 161, 111]], dtype=np.float64),
                  "scores": np.array([0.95, 0.9, 0.85, 0.8, 0.7]), "labels": np.zeros(5, np.int64)}
    result = overlapped_recall([detections], [CROWD_TRUTH], [(120, 200)])
    # recall 0.5, 0.5, 1 and precision 1, 1/2, 2/3: one trapezoid (1 - 0.5) (1/2 + 2/3) / 2; the
    # false positive makes 1 per image before P1 is found, so the miss rate is 0.5 at every FPPI up to 1.
    assert result["overlapped_ap"] == pytest.approx(0.5 * (0.5 + 2 / 3) / 2)
    assert result["overlapped_mr"] == pytest.approx(0.5)
    assert result["overlapped_recall"] == 1.0 and result["recall"] == 1.0


def test_overlapped_recall_through_kind_detections():
    """A triplet record's full boxes are what counts; its head boxes alone find nobody's full body."""
    triplet = {"boxes": np.array([[10, 10, 50, 110], [20, 10, 60, 110]], dtype=np.float64),
               "visible_boxes": np.array([[10, 10, 50, 110], [50, 10, 60, 110]], dtype=np.float64),
               "head_boxes": np.array([[20, 10, 40, 30], [44, 10, 60, 26]], dtype=np.float64),
               "scores": np.array([0.9, 0.8]), "labels": np.array([0, 0])}
    full = person_triplets.kind_detections([triplet], person_triplets.DETECTION_KEYS["full"])
    assert full[0]["boxes"].tolist() == triplet["boxes"].tolist()
    result = overlapped_recall(full, [CROWD_TRUTH], [(120, 200)])
    assert result["overlapped_recall"] == 1.0 and result["recall"] == pytest.approx(2 / 3)
    heads = person_triplets.kind_detections([triplet], person_triplets.DETECTION_KEYS["head"])
    assert heads[0]["boxes"].tolist() == triplet["head_boxes"].tolist() and heads[0]["labels"].tolist() == [0, 0]
    assert overlapped_recall(heads, [CROWD_TRUTH], [(120, 200)])["recall"] == 0.0
