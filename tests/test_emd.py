"""Two predictions per anchor: targets, the EMD loss's assignment, Set NMS, checkpoints."""
import math

import pytest
import torch
from torchvision.ops import box_iou

from retinanet import postprocess
from retinanet.box_coder import BoxCoder, reference_boxes
from retinanet.errors import UserError
from retinanet.export import export_onnx
from retinanet.hub import load_model
from retinanet.losses import build_targets, emd_targets, retinanet_loss
from retinanet.matcher import BACKGROUND, BETWEEN_THRESHOLDS
from retinanet.model import RetinaNet
from retinanet.postprocess import flat_detections, paired_nms, set_nms
from retinanet.state_dicts import infer_model_args, load_weights
from tests.helpers import save_model_checkpoint

# Person A and B behind it: full bodies at IoU 3000 / 5000 = 0.6 (tests/test_paired_nms.py's people).
A = torch.tensor([10.0, 10, 50, 110])
B = torch.tensor([20.0, 10, 60, 110])


def test_each_anchor_gets_the_two_boxes_it_overlaps_most():
    anchors = torch.tensor([
        [10.0, 10, 50, 110],  # A at IoU 1, B at 0.6: both positive, A first
        [20.0, 10, 60, 110],  # B at 1, A at 0.6: B first
        [0.0, 10, 40, 110],  # A at 3000 / 5000 = 0.6, B at 2000 / 6000 = 0.33: A, then background
        [14.0, 10, 54, 110],  # A at 3600 / 4400 = 0.82, B at 3400 / 4600 = 0.74
        [4.0, 10, 44, 110],  # A at 3400 / 4600 = 0.74, B at 2400 / 5600 = 0.43: between thresholds
        [300.0, 300, 340, 400],  # neither: background twice
    ])
    targets = [{"boxes": torch.stack([A, B]), "labels": torch.tensor([0, 0])}]
    labels, weights, ignored, box_targets, box_weights = build_targets(targets, anchors, 1, BoxCoder(),
                                                                       instances_per_anchor=2)
    assert labels.tolist() == [[0, 0, 0, 0, 0, -1, 0, 0, 0, -1, -1, -1]]
    assert weights.tolist() == [[True] * 9 + [False, True, True]]
    assert ignored is None and box_weights[0, :, 0].tolist() == (labels[0] >= 0).tolist()
    # row a * 2 + i is instance i of anchor a: anchor 1's first target is B, its second A
    coder = BoxCoder()
    assert torch.allclose(box_targets[0, 2], coder.encode(B, anchors[1]))
    assert torch.allclose(box_targets[0, 3], coder.encode(A, anchors[1]))
    assert torch.allclose(box_targets[0, 7], coder.encode(B, anchors[3]))


def test_one_box_or_none_leaves_the_second_instance_background():
    anchors = torch.tensor([[10.0, 10, 50, 110], [300.0, 300, 340, 400]])
    one = build_targets([{"boxes": A[None], "labels": torch.tensor([0])}], anchors, 1, BoxCoder(),
                        instances_per_anchor=2)
    none = build_targets([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}], anchors, 1,
                         BoxCoder(), instances_per_anchor=2)
    assert one[0].tolist() == [[0, -1, -1, -1]] and one[1].tolist() == [[True] * 4]
    assert none[0].tolist() == [[-1] * 4] and not none[4].any()


def test_matched_codes_are_the_matchers():
    assert (BACKGROUND, BETWEEN_THRESHOLDS) == (-1, -2)


def predictions_for(anchor, first, second, score=3.0):
    """class logits (1, 2, 1) and box deltas (1, 2, 4) of one anchor predicting ``first`` then ``second``."""
    deltas = torch.stack([BoxCoder().encode(first, anchor), BoxCoder().encode(second, anchor)])[None]
    return torch.full((1, 2, 1), score), deltas


def test_the_assignment_follows_the_predictions():
    anchors = A[None]
    targets = build_targets([{"boxes": torch.stack([A, B]), "labels": torch.tensor([0, 0])}], anchors, 1,
                            BoxCoder(), instances_per_anchor=2)
    # targets in the order A, B; the predictions say B, A: the assignment swaps them
    logits, deltas = predictions_for(anchors[0], B, A)
    swapped = emd_targets(logits, deltas, targets, 2)
    assert torch.allclose(swapped[3][0], targets[3][0].flip(0))
    logits, deltas = predictions_for(anchors[0], A, B)
    assert torch.equal(emd_targets(logits, deltas, targets, 2)[3], targets[3])


def test_the_loss_is_the_same_whichever_prediction_finds_whom():
    """min over assignments: swapping an anchor's two predictions changes nothing, and exact boxes cost 0."""
    anchors = torch.tensor([[10.0, 10, 50, 110], [14.0, 10, 54, 110], [300.0, 300, 340, 400]])
    targets = [{"boxes": torch.stack([A, B]), "labels": torch.tensor([0, 0])}]
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 6, 1, generator=generator)
    deltas = torch.randn(1, 6, 4, generator=generator)
    swap = torch.tensor([1, 0, 3, 2, 5, 4])
    one = retinanet_loss(logits, deltas, anchors, targets)
    other = retinanet_loss(logits[:, swap], deltas[:, swap], anchors, targets)
    assert one["classification"] == pytest.approx(float(other["classification"]), rel=1e-6)
    assert one["regression"] == pytest.approx(float(other["regression"]), rel=1e-6)

    exact = torch.cat([predictions_for(anchors[0], B, A)[1], predictions_for(anchors[1], A, B)[1],
                       torch.zeros(1, 2, 4)], dim=1)
    assert float(retinanet_loss(logits, exact, anchors, targets)["regression"]) == pytest.approx(0.0, abs=1e-6)


def test_the_loss_is_the_cheaper_of_the_two_orders():
    """An independent reference: the loss of each order as a one-prediction-per-row problem."""
    anchors = A[None]
    targets = [{"boxes": torch.stack([A, B]), "labels": torch.tensor([0, 0])}]
    logits = torch.tensor([[[1.0], [-1.0]]])
    deltas = torch.tensor([[[0.5, 0.0, 0.1, 0.0], [0.1, 0.0, 0.0, 0.0]]])
    coder = BoxCoder()
    costs = []
    for first, second in ((A, B), (B, A)):
        # both rows positive: FL = -alpha (1 - p)^2 log p; smooth L1 over 4 values / (4 P), P = 2
        focal = sum(-0.25 * (1 - torch.sigmoid(x)) ** 2 * torch.log(torch.sigmoid(x)) for x in logits[0, :, 0])
        residual = deltas[0] - torch.stack([coder.encode(first, A), coder.encode(second, A)])
        l1 = torch.where(residual.abs() < 1 / 9, 4.5 * residual ** 2, residual.abs() - 1 / 18).sum()
        costs.append((float(focal) / 2, float(l1) / 8))
    loss = retinanet_loss(logits, deltas, anchors, targets)
    best = min(costs, key=sum)
    assert costs[0] != costs[1]
    assert (float(loss["classification"]), float(loss["regression"])) == pytest.approx(best, rel=1e-5)


def test_set_nms_keeps_the_two_people_of_one_anchor_and_drops_another_anchors_duplicate():
    boxes = torch.stack([A, B, A + 1, B + 1])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.zeros(4, dtype=torch.int64)
    sources = torch.tensor([7, 7, 3, 7])  # the last is a third prediction of anchor 7, a duplicate of B
    keep = set_nms(boxes, scores, labels, torch.zeros(4, dtype=torch.int64), sources, 1, 0.5)
    assert keep.tolist() == [0, 1, 3]
    # the classes never meet: a head class box over A stays
    keep = set_nms(boxes[:3], scores[:3], torch.tensor([0, 0, 1]), torch.zeros(3, dtype=torch.int64),
                   torch.tensor([1, 2, 3]), 1, 0.5)
    assert keep.tolist() == [0, 2]


def sequential_set_nms(boxes, scores, labels, image_idx, sources, threshold):
    keep = []
    for i in scores.argsort(descending=True).tolist():
        if not any(image_idx[k] == image_idx[i] and labels[k] == labels[i] and sources[k] != sources[i]
                   and float(box_iou(boxes[k][None], boxes[i][None])) > threshold for k in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(4))
def test_set_nms_equals_the_sequential_rule_on_random_crowds(seed, monkeypatch):
    monkeypatch.setattr(postprocess, "PAIRED_BLOCK", (7, 32)[seed % 2])
    generator = torch.Generator().manual_seed(seed)
    num, num_images = 120 + 30 * seed, 1 + seed % 3
    centre = torch.rand(num, 2, generator=generator) * 80
    size = 15 + torch.rand(num, 2, generator=generator) * 10
    boxes = torch.cat([centre - size, centre + size], dim=1)
    scores = torch.rand(num, generator=generator)
    labels = torch.randint(0, 2, (num,), generator=generator)
    image_idx = torch.randint(0, num_images, (num,), generator=generator)
    sources = torch.randint(0, num // 3, (num,), generator=generator)
    ours = set_nms(boxes, scores, labels, image_idx, sources, num_images, 0.5)
    assert ours.tolist() == sequential_set_nms(boxes, scores, labels, image_idx, sources, 0.5)
    assert len(ours) > num_images


def test_paired_nms_told_the_anchors_keeps_an_anchors_two_predictions():
    triple = lambda full: torch.stack([full, full, full])  # noqa: E731 (same visible body and head: a duplicate)
    boxes = torch.stack([triple(A), triple(B)])
    args = (torch.tensor([0.9, 0.8]), torch.zeros(2, dtype=torch.int64), torch.zeros(2, dtype=torch.int64), 1, 0.5)
    assert paired_nms(boxes, *args).tolist() == [0]
    assert paired_nms(boxes, *args, sources=torch.tensor([4, 4])).tolist() == [0, 1]
    assert paired_nms(boxes, *args, sources=torch.tensor([4, 5])).tolist() == [0]


def test_flat_detections_keep_both_people_of_one_anchor():
    """One level, one anchor (A) predicting A and B; as two anchors of their own, NMS keeps A only."""
    anchors = torch.stack([A, A])  # the anchor once per prediction
    people = torch.stack([torch.stack([A, A, A]), torch.stack([B, B, B])])
    deltas = BoxCoder().encode(people, reference_boxes(anchors, 3)).reshape(1, 2, 12)
    logits = torch.tensor([2.0, 1.0])[None, :, None]
    found = {}
    for instances in (1, 2):
        boxes, scores, _, _ = flat_detections([logits], [deltas], [anchors], BoxCoder(), torch.tensor([[128.0, 128.0]]),
                                              boxes_per_anchor=3, instances_per_anchor=instances)
        found[instances] = boxes[:, :4]
        assert scores.tolist() == pytest.approx([1 / (1 + math.exp(-v)) for v in (2.0, 1.0)[:len(boxes)]])
    assert torch.allclose(found[1], A[None], atol=1e-3)
    assert torch.allclose(found[2], torch.stack([A, B]), atol=1e-3)


def emd_model(**kwargs):
    return RetinaNet(2, depth=18, feature_size=16, person_triplets=True, instances_per_anchor=2, **kwargs)


def test_a_two_instance_checkpoint_round_trips(tmp_path):
    torch.manual_seed(0)
    model = emd_model(score_threshold=0.0).eval()
    torch.nn.init.normal_(model.classificationModel.output.weight, std=0.01)
    torch.nn.init.normal_(model.regressionModel.output.weight, std=0.01)
    assert model.classificationModel.output.out_channels == 9 * 2 * 2
    assert model.regressionModel.output.out_channels == 9 * 2 * 12
    path = str(tmp_path / "emd.pt")
    save_model_checkpoint(path, model, ["person", "head"])
    assert infer_model_args(model.state_dict(), path) == {"depth": 18, "num_classes": 2, "feature_size": 16,
                                                          "person_triplets": True, "instances_per_anchor": 2}
    loaded, names = load_model(path, score_threshold=0.0)
    assert loaded.instances_per_anchor == 2 and names == ["person", "head"]
    images = torch.rand(1, 3, 64, 96)
    ours, theirs = model(images)[0], loaded(images)[0]
    assert len(ours["scores"]) > 0 and torch.equal(ours["scores"], theirs["scores"])
    assert torch.equal(ours["head_boxes"], theirs["head_boxes"])


def test_a_change_of_predictions_per_anchor_needs_fine_tuning(tmp_path):
    torch.manual_seed(0)
    single = RetinaNet(2, depth=18, feature_size=16, person_triplets=True)
    path = str(tmp_path / "single.pt")
    save_model_checkpoint(path, single, ["person", "head"])
    model = emd_model()
    with pytest.raises(UserError, match="single.pt: checkpoint predicts 1 people per anchor, the model 2"):
        load_weights(model, path, ["person", "head"])
    messages = []
    load_weights(model, path, ["person", "head"], allow_class_change=True, log=messages.append)
    assert "class and box output layers initialised" in messages[0]
    assert torch.equal(model.classificationModel.conv1.weight, single.classificationModel.conv1.weight)
    assert torch.equal(model.layer1[0].conv1.weight, single.layer1[0].conv1.weight)
    assert model.classificationModel.output.bias.shape == (36,)


def test_two_instances_are_a_triplet_models_and_are_not_exported(tmp_path):
    with pytest.raises(UserError, match="for a plain model"):
        RetinaNet(2, depth=18, feature_size=16, instances_per_anchor=2)
    with pytest.raises(UserError, match="got 3"):
        RetinaNet(2, depth=18, feature_size=16, person_triplets=True, instances_per_anchor=3)
    model = emd_model().eval()
    assert model.model_args()["instances_per_anchor"] == 2
    assert "instances_per_anchor" not in RetinaNet(2, depth=18, feature_size=16, person_triplets=True).model_args()
    with pytest.raises(UserError, match="Set NMS"):
        export_onnx(model, str(tmp_path / "emd.onnx"), ["person", "head"])
    assert not list(tmp_path.iterdir())


def test_an_anchors_two_heads_at_iou_over_half_are_one_head():
    """Set NMS is for people: two head detections of one anchor overlapping at IoU 0.6 keep the better."""
    anchors = torch.stack([A, A])
    heads = torch.stack([torch.stack([A, A, A]), torch.stack([B, B, B])])
    deltas = BoxCoder().encode(heads, reference_boxes(anchors, 3)).reshape(1, 2, 12)
    logits = torch.tensor([[-9.0, 2.0], [-9.0, 1.0]])[None]  # class 1, the head class
    boxes, scores, labels, _ = flat_detections([logits], [deltas], [anchors], BoxCoder(),
                                               torch.tensor([[128.0, 128.0]]), boxes_per_anchor=3, head_class=1,
                                               instances_per_anchor=2)
    assert labels.tolist() == [1] and torch.allclose(boxes[0, :4], A, atol=1e-3)


def test_a_training_step_reaches_both_predictions_of_an_anchor():
    torch.manual_seed(0)
    model = emd_model(freeze_bn=False)
    boxes = torch.stack([A, B, torch.tensor([22.0, 12, 38, 28])])
    target = {"boxes": boxes, "labels": torch.tensor([0, 0, 1]), "visible_boxes": boxes.clone(),
              "head_boxes": boxes.clone(), "head_valid": torch.tensor([True, True, False]),
              "visible_valid": torch.tensor([True, True, False])}
    losses = model(torch.rand(1, 3, 128, 96), [target])
    assert all(math.isfinite(float(value.detach())) and float(value.detach()) > 0 for value in losses.values())
    (losses["classification"] + losses["regression"]).backward()
    grad = model.regressionModel.output.bias.grad.reshape(9, 2, 12)  # (anchor, prediction, values)
    assert grad[:, 0].abs().sum() > 0 and grad[:, 1].abs().sum() > 0
