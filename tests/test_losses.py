import math

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from retinanet.box_coder import BoxCoder
from retinanet.losses import build_targets, focal_loss_per_image, retinanet_loss
from retinanet.model import RetinaNet
from tests.helpers import logical_order

ANCHORS = torch.tensor(
    [
        [0.0, 0.0, 10.0, 10.0],  # IoU 1 with box 0 -> positive
        [1.0, 1.0, 11.0, 11.0],  # IoU 81/119 = 0.68 -> positive
        [5.0, 0.0, 15.0, 10.0],  # IoU 50/150 = 0.33 -> background
        [3.0, 0.0, 13.0, 10.0],  # IoU 70/130 = 0.54 -> positive
        [4.0, 0.0, 14.0, 10.0],  # IoU 60/140 = 0.43 -> between thresholds
        [40.0, 40.0, 50.0, 50.0],  # far away: background, but inside the ignore region
    ]
)


def reference_focal(p_logit, target, alpha=0.25, gamma=2.0):
    p = 1 / (1 + math.exp(-p_logit))
    if target == 1:
        return -alpha * (1 - p) ** gamma * math.log(p)
    return -(1 - alpha) * p ** gamma * math.log(1 - p)


def test_build_targets_assignment_and_ignore():
    target = {
        "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]),
        "labels": torch.tensor([1]),
        "ignore": torch.tensor([[35.0, 35.0, 60.0, 60.0], [0.0, 0.0, 12.0, 12.0]]),
        "ignore_labels": torch.tensor([-1, 0]),
    }
    anchor_labels, anchor_weights, class_ignored, box_targets, box_weights = build_targets(
        [target], ANCHORS, 2, BoxCoder())
    assert anchor_labels[0].tolist() == [1, 1, -1, 1, -1, -1]
    # anchor 4 is between thresholds and anchor 5 lies in the every-class region: out for every class.
    assert anchor_weights[0].tolist() == [True, True, True, True, False, False]
    # the class-0 region covers anchors 0, 1 (positive: kept) and 2, 3 (ioa >= 0.5): class 0 out for 2 only.
    assert class_ignored[0].tolist() == [
        [False, False], [False, False], [True, False], [False, False], [True, False], [False, False]
    ]
    assert torch.allclose(box_targets[0, 0], torch.zeros(4), atol=1e-6)


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (0.5, 0.0), (0.25, 1.5)])
def test_focal_loss_and_gradient_match_torchvision(alpha, gamma):
    logits = (torch.randn(2, 6, 3, dtype=torch.float64) * 3).requires_grad_()
    anchor_labels = torch.tensor([[0, -1, 2, -1, -1, 1], [-1, -1, -1, -1, 0, -1]])
    weights = torch.rand(2, 6, 3, dtype=torch.float64).round()
    targets = torch.zeros(2, 6, 3, dtype=torch.float64)
    image, anchor = (anchor_labels >= 0).nonzero(as_tuple=True)
    targets[image, anchor, anchor_labels[image, anchor]] = 1.0
    weights[image, anchor, anchor_labels[image, anchor]] = 1.0  # positives are never left out
    ours = focal_loss_per_image(logits.double(), anchor_labels, weights, alpha, gamma)
    expected = (sigmoid_focal_loss(logits, targets, alpha, gamma, reduction="none") * weights).sum(dim=(1, 2))
    # focal_loss_per_image computes in float32
    assert torch.allclose(ours.double(), expected, rtol=1e-5, atol=1e-7)
    grad_ours = torch.autograd.grad(ours.sum(), logits)[0]
    grad_expected = torch.autograd.grad(expected.sum(), logits)[0]
    assert torch.allclose(grad_ours, grad_expected, rtol=1e-5, atol=1e-7)


CONFIDENT_LOGITS = [-1e4, -1e3, -104.0, -89.0, -88.0, -20.0, -5.0, 0.0, 5.0, 20.0, 89.0, 1e3, 1e4]


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 1e-3)])
def test_focal_loss_is_finite_and_equals_torchvision_for_confident_logits(dtype, rtol):
    """Every logit as one image of one anchor and one class, positive and negative: torchvision's
    float64 loss and gradient are the reference; ours must be finite for each."""
    values = torch.tensor(CONFIDENT_LOGITS * 2, dtype=dtype).reshape(-1, 1, 1).requires_grad_()
    positive = torch.arange(values.shape[0]) < len(CONFIDENT_LOGITS)
    anchor_labels = torch.where(positive, 0, -1)[:, None]  # (N, 1): class 0 or background
    ours = focal_loss_per_image(values, anchor_labels, torch.ones(values.shape[0], 1, 1))
    grad_ours = torch.autograd.grad(ours.sum(), values)[0]
    assert torch.isfinite(ours).all() and torch.isfinite(grad_ours).all()

    reference_logits = values.detach().double().requires_grad_()  # the same values the dtype could hold
    expected = sigmoid_focal_loss(reference_logits, positive.double().reshape(-1, 1, 1), reduction="none")
    grad_expected = torch.autograd.grad(expected.sum(), reference_logits)[0]
    assert torch.allclose(ours.double(), expected.reshape(-1), rtol=1e-5, atol=1e-6)
    assert grad_ours.dtype == dtype
    assert torch.allclose(grad_ours.double(), grad_expected, rtol=rtol, atol=1e-6)
    # a diverged model (NaN logits) still shows as a non-finite loss, which the training loop skips
    nan = focal_loss_per_image(torch.full((1, 1, 1), math.nan), torch.tensor([[-1]]), torch.ones(1, 1, 1))
    assert torch.isnan(nan).all()


def reference_loss(class_logits, box_deltas, anchors, targets):
    """Plain-Python per-anchor loss of one image at a time, then averaged over images."""
    coder = BoxCoder()
    class_losses, box_losses = [], []
    for b, target in enumerate(targets):
        boxes = target["boxes"]
        cls_total, box_total, num_pos = 0.0, 0.0, 0
        for a in range(anchors.shape[0]):
            ious = _iou_row(anchors[a], boxes)
            best = max(ious) if ious else 0.0
            if 0.4 <= best < 0.5:
                continue
            positive = best >= 0.5
            label = int(target["labels"][ious.index(best)]) if positive else -1
            for k in range(class_logits.shape[2]):
                cls_total += reference_focal(float(class_logits[b, a, k]), 1 if k == label else 0)
            if positive:
                num_pos += 1
                t = coder.encode(boxes[ious.index(best)][None], anchors[a][None])[0]
                for c in range(4):
                    d = abs(float(box_deltas[b, a, c]) - float(t[c]))
                    box_total += 0.5 * d * d * 9 if d < 1 / 9 else d - 0.5 / 9
        class_losses.append(cls_total / max(num_pos, 1))
        box_losses.append(box_total / (4 * num_pos) if num_pos else 0.0)
    return sum(class_losses) / len(targets), sum(box_losses) / len(targets)


def _iou_row(anchor, boxes):
    out = []
    for box in boxes:
        iw = max(0.0, min(anchor[2], box[2]) - max(anchor[0], box[0]))
        ih = max(0.0, min(anchor[3], box[3]) - max(anchor[1], box[1]))
        inter = float(iw * ih)
        union = float((anchor[2] - anchor[0]) * (anchor[3] - anchor[1]) + (box[2] - box[0]) * (box[3] - box[1])) - inter
        out.append(inter / union)
    return out


def test_retinanet_loss_matches_reference_and_handles_empty_images():
    class_logits = torch.randn(2, 6, 2, dtype=torch.float64)
    box_deltas = torch.randn(2, 6, 4, dtype=torch.float64) * 0.3
    anchors = ANCHORS.double()
    targets = [
        {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [40.0, 41.0, 50.0, 52.0]], dtype=torch.float64),
         "labels": torch.tensor([1, 0])},
        {"boxes": torch.zeros(0, 4, dtype=torch.float64), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    ours = retinanet_loss(class_logits, box_deltas, anchors, targets)
    ref_cls, ref_box = reference_loss(class_logits, box_deltas, anchors, targets)
    assert math.isclose(float(ours["classification"]), ref_cls, rel_tol=1e-6)
    assert math.isclose(float(ours["regression"]), ref_box, rel_tol=1e-6)


def test_no_boxes_gives_zero_box_loss_finite_class_loss_and_gradients():
    model = RetinaNet(num_classes=2, depth=18, feature_size=32, freeze_bn=False)
    with torch.no_grad(), logical_order(model):  # zero-initialised outputs pass no gradient back to the layers below
        model.classificationModel.output.weight.normal_(0, 0.01)
        model.regressionModel.output.weight.normal_(0, 0.01)
    images = torch.randn(2, 3, 64, 96)
    targets = [
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
        {"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0]]), "labels": torch.tensor([0])},
    ]
    losses = model(images[:1], targets[:1])
    assert losses["regression"].item() == 0.0
    assert torch.isfinite(losses["classification"]) and float(losses["classification"].detach()) > 0
    losses = model(images, targets)
    (losses["classification"] + losses["regression"]).backward()
    assert model.classificationModel.output.weight.grad.abs().sum() > 0
    assert model.regressionModel.output.weight.grad.abs().sum() > 0
    assert model.conv1.weight.grad.abs().sum() > 0
