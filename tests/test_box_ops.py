import math

import torch

from retinanet.box_coder import BoxCoder
from retinanet.boxes import box_ioa, box_iou, clip_boxes
from retinanet.matcher import BACKGROUND, BETWEEN_THRESHOLDS, ignored_classes, match_anchors


def test_iou_and_ioa_hand_values():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 4.0, 4.0]])
    b = torch.tensor([[5.0, 5.0, 15.0, 15.0], [0.0, 0.0, 20.0, 20.0]])
    iou = box_iou(a, b)
    assert torch.allclose(iou, torch.tensor([[25 / 175, 100 / 400], [0.0, 16 / 400]]))
    ioa = box_ioa(a, b)  # intersection / area of the rows' boxes
    assert torch.allclose(ioa, torch.tensor([[25 / 100, 1.0], [0.0, 1.0]]))


def test_clip_boxes():
    boxes = torch.tensor([[-5.0, 3.0, 50.0, 70.0]])
    assert torch.equal(clip_boxes(boxes, 60, 40), torch.tensor([[0.0, 3.0, 40.0, 60.0]]))


def test_encode_hand_value_and_round_trip():
    coder = BoxCoder()
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    box = torch.tensor([[2.0, 4.0, 12.0, 44.0]])
    deltas = coder.encode(box, anchor)
    expected = torch.tensor([[(7 - 5) / 10 / 0.1, (24 - 10) / 20 / 0.1, math.log(1.0) / 0.2, math.log(2.0) / 0.2]])
    assert torch.allclose(deltas, expected)
    anchors = torch.rand(50, 2) * 100
    anchors = torch.cat([anchors, anchors + 5 + torch.rand(50, 2) * 80], dim=1)
    boxes = torch.rand(50, 2) * 100
    boxes = torch.cat([boxes, boxes + 2 + torch.rand(50, 2) * 60], dim=1)
    assert torch.allclose(coder.decode(coder.encode(boxes, anchors), anchors), boxes, atol=1e-3)


def test_decode_clamps_huge_scale():
    coder = BoxCoder()
    boxes = coder.decode(torch.tensor([[0.0, 0.0, 1000.0, 1000.0]]), torch.tensor([[0.0, 0.0, 16.0, 16.0]]))
    assert torch.isfinite(boxes).all()
    assert math.isclose(float(boxes[0, 2] - boxes[0, 0]), 1000.0, rel_tol=1e-4)


def test_match_anchors_hand_matrix():
    # 2 boxes x 5 anchors
    iou = torch.tensor([[0.70, 0.45, 0.10, 0.30, 0.50], [0.20, 0.35, 0.39, 0.60, 0.49]])
    matched = match_anchors(iou)
    assert matched.tolist() == [0, BETWEEN_THRESHOLDS, BACKGROUND, 1, 0]
    assert match_anchors(torch.zeros(0, 3)).tolist() == [BACKGROUND] * 3


def test_ignored_classes_per_class_and_all():
    ioa = torch.tensor([[0.6, 0.0], [0.4, 0.9], [0.5, 0.5]])  # 3 anchors x 2 regions
    labels = torch.tensor([1, -1])  # region 0 ignores class 1, region 1 every class
    ignored = ignored_classes(ioa, labels, num_classes=3)
    assert ignored.tolist() == [[False, True, False], [True, True, True], [True, True, True]]
