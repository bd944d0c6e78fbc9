"""Paired suppression of person triplets (postprocess.paired_nms): hand-made crowds and a sequential reference."""
import math

import pytest
import torch
from torchvision.ops import box_iou, nms

from retinanet import postprocess
from retinanet.box_coder import BoxCoder, reference_boxes
from retinanet.errors import UserError
from retinanet.export import export_onnx
from retinanet.hub import load_model
from retinanet.model import RetinaNet
from retinanet.postprocess import flat_detections, paired_nms
from tests.helpers import save_model_checkpoint

HEAD = 1  # the head class of a two-class triplet model

# Person A; B stands right behind A (full bodies at IoU 3000 / 5000 = 0.6) with its visible body the
# strip right of A's and its own head; C stands behind A too, its visible body mostly A's (IoU 0.75);
# a duplicate of A, 1 px off.
A = ((10, 10, 50, 110), (10, 10, 50, 110), (20, 10, 40, 30))
B = ((20, 10, 60, 110), (50, 10, 60, 110), (44, 10, 60, 26))
C = ((16, 10, 56, 110), (10, 10, 40, 110), (44, 30, 60, 46))
A_AGAIN = tuple(tuple(v + 1 for v in box) for box in A)


def hand_iou(a, b):
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return iw * ih / (area(a) + area(b) - iw * ih)


def candidates(people, heads=()):
    """people: (full, visible, head) triples with scores; heads: (box, score) detected on their own.
    Returns boxes (D, 3, 4), scores, labels (persons 0, heads HEAD), image_idx (all 0)."""
    rows = [triple for triple, _ in people] + [(box, box, box) for box, _ in heads]
    scores = [score for _, score in people] + [score for _, score in heads]
    labels = [0] * len(people) + [HEAD] * len(heads)
    return (torch.tensor(rows, dtype=torch.float32), torch.tensor(scores), torch.tensor(labels),
            torch.zeros(len(rows), dtype=torch.int64))


def test_hand_made_people_overlap_as_described():
    assert hand_iou(A[0], B[0]) == pytest.approx(0.6) and hand_iou(A[1], B[1]) == 0 and hand_iou(A[2], B[2]) == 0
    assert hand_iou(A[0], C[0]) > 0.5 and hand_iou(A[1], C[1]) == pytest.approx(0.75)
    assert hand_iou(A[0], A_AGAIN[0]) > 0.9


def test_a_person_behind_another_survives_and_a_duplicate_does_not():
    # heads of their own: A's and B's; C's regressed head overlaps B's at IoU 0.
    boxes, scores, labels, image_idx = candidates([(A, 0.9), (A_AGAIN, 0.8), (B, 0.7), (C, 0.6)],
                                                  [(A[2], 0.95), (B[2], 0.85)])
    keep = paired_nms(boxes, scores, labels, image_idx, 1, 0.5, HEAD)
    # A; B apart by head and visible body; both heads. The duplicate shares A's head; C has no head
    # scoring > HEAD_SCORE near its regressed one (so the same head as everyone) and A's visible body.
    assert keep.tolist() == [4, 0, 5, 2]


def test_a_duplicate_with_its_head_on_the_neighbour_goes_by_its_visible_body():
    # The duplicate's regressed head lands on B's head, yet its visible body is A's.
    stray = (A_AGAIN[0], A_AGAIN[1], B[2])
    boxes, scores, labels, image_idx = candidates([(A, 0.9), (stray, 0.8), (B, 0.7)], [(A[2], 0.95), (B[2], 0.85)])
    assert paired_nms(boxes, scores, labels, image_idx, 1, 0.5, HEAD).tolist() == [3, 0, 4, 2]


def test_people_need_a_confident_head_of_their_own_to_stay_apart():
    # B's head scores under HEAD_SCORE: B has no head, so A's full body removes it.
    weak = postprocess.HEAD_SCORE / 2
    boxes, scores, labels, image_idx = candidates([(A, 0.9), (B, 0.7)], [(A[2], 0.95), (B[2], weak)])
    assert paired_nms(boxes, scores, labels, image_idx, 1, 0.5, HEAD).tolist() == [2, 0, 3]
    # B's regressed head overlaps its head detection at IoU 12 x 12 / 16 x 16 = 0.5625 > HEAD_MATCH_IOU
    nearby = (B[0], B[1], (48, 14, 60, 26))
    assert hand_iou(nearby[2], B[2]) > postprocess.HEAD_MATCH_IOU
    boxes, scores, labels, image_idx = candidates([(A, 0.9), (nearby, 0.7)], [(A[2], 0.95), (B[2], 0.85)])
    assert paired_nms(boxes, scores, labels, image_idx, 1, 0.5, HEAD).tolist() == [2, 0, 3, 1]


def test_without_a_head_class_the_regressed_heads_tell_people_apart():
    boxes, scores, labels, image_idx = candidates([(A, 0.9), (A_AGAIN, 0.8), (B, 0.7), (C, 0.6)])
    assert paired_nms(boxes, scores, labels, image_idx, 1, 0.5).tolist() == [0, 2]


def test_images_never_suppress_each_other():
    boxes, scores, labels, _ = candidates([(A, 0.9), (A_AGAIN, 0.8)])
    image_idx = torch.tensor([0, 1])
    assert paired_nms(boxes, scores, labels, image_idx, 2, 0.5).tolist() == [0, 1]


def test_flat_detections_with_paired_suppression_keep_the_person_behind():
    """One level, one image, one class: the anchors are the full boxes (zero full-body deltas), the
    visible and head deltas encode each person's boxes."""
    people = (A, B, A_AGAIN)
    anchors = torch.tensor([p[0] for p in people], dtype=torch.float32)
    references = reference_boxes(anchors, 3)
    deltas = BoxCoder().encode(torch.tensor(people, dtype=torch.float32), references).reshape(1, 3, 12)
    logits = torch.tensor([2.0, 1.0, 0.0])[None, :, None]
    found = {}
    for paired in (False, True):
        boxes, scores, _, _ = flat_detections([logits], [deltas], [anchors], BoxCoder(), torch.tensor([[128.0, 128.0]]),
                                              boxes_per_anchor=3, paired=paired)
        found[paired] = boxes
        assert scores.tolist() == pytest.approx([1 / (1 + math.exp(-v)) for v in (2.0, 1.0)[:len(boxes)]])
    assert torch.allclose(found[False], torch.tensor([sum(A, ())], dtype=torch.float32), atol=1e-3)
    assert torch.allclose(found[True], torch.tensor([sum(A, ()), sum(B, ())], dtype=torch.float32), atol=1e-3)


def sequential_reference(boxes, scores, labels, image_idx, threshold, head_class):
    """The rule of paired_nms, one candidate at a time: NMS of the heads, then each person by
    descending score is kept unless a kept person of its image removes it."""
    boxes = torch.cat([boxes[..., :2], torch.maximum(boxes[..., 2:], boxes[..., :2])], dim=-1)
    iou = lambda a, b: float(box_iou(a[None], b[None])[0, 0])  # noqa: E731
    keep = []
    for image in image_idx.unique().tolist():
        members = torch.nonzero(image_idx == image)[:, 0]
        heads = members[labels[members] == head_class] if head_class is not None else members[:0]
        heads = heads[nms(boxes[heads, 0], scores[heads], threshold)]
        keep += heads.tolist()
        confident = heads[scores[heads] > postprocess.HEAD_SCORE]

        def head_of(i, confident=confident):
            if head_class is None:
                return boxes[i, 2]
            if len(confident) == 0:
                return None
            overlap = box_iou(boxes[i, 2][None], boxes[confident, 0])[0]
            best = int((overlap * scores[confident]).argmax())
            good = overlap[best] * scores[confident[best]] > 0 and overlap[best] > postprocess.HEAD_MATCH_IOU
            return boxes[confident[best], 0] if good else None

        people = members[labels[members] != head_class] if head_class is not None else members
        kept = []
        for i in people[scores[people].argsort(descending=True)].tolist():
            removed = False
            for k in kept:
                same_head = head_of(i) is None or head_of(k) is None or iou(head_of(i), head_of(k)) > threshold
                visible = iou(boxes[k, 1], boxes[i, 1]) > threshold
                if iou(boxes[k, 0], boxes[i, 0]) > threshold and (same_head or visible):
                    removed = True
                    break
            if not removed:
                kept.append(i)
        keep += kept
    return sorted(keep)


@pytest.mark.parametrize("seed", range(6))
def test_paired_nms_equals_the_sequential_rule_on_random_crowds(seed, monkeypatch):
    # small blocks, so that the kept people of earlier blocks and the fixed point within one both count
    monkeypatch.setattr(postprocess, "PAIRED_BLOCK", (5, 16, 64)[seed % 3])
    generator = torch.Generator().manual_seed(seed)
    num, num_images = 150 + 40 * seed, 1 + seed % 3
    centre = (torch.rand(5, 2, generator=generator) * 100)[torch.randint(0, 5, (num,), generator=generator)]
    centre = centre + torch.randn(num, 2, generator=generator) * 6
    size = 20 + torch.rand(num, 1, generator=generator) * 10
    full = torch.cat([centre - size, centre + size], dim=1)
    visible = torch.cat([centre - size / 2 + torch.randn(num, 2, generator=generator) * 5, centre + size / 2], dim=1)
    head = torch.cat([centre - 5 + torch.randn(num, 2, generator=generator) * 3, centre + 5], dim=1)
    head_class = None if seed % 2 else HEAD
    labels = torch.randint(0, 2, (num,), generator=generator) if head_class else torch.zeros(num, dtype=torch.int64)
    boxes = torch.stack([full, visible, head], dim=1)
    boxes[labels == HEAD, 0] = head[labels == HEAD]
    boxes[0, 2] = torch.tensor([5.0, 5.0, 2.0, 2.0])  # a head clipped to nothing above its image
    scores = torch.rand(num, generator=generator)
    image_idx = torch.randint(0, num_images, (num,), generator=generator)
    ours = paired_nms(boxes, scores, labels, image_idx, num_images, 0.5, head_class)
    assert scores[ours].tolist() == sorted(scores[ours].tolist(), reverse=True)
    assert sorted(ours.tolist()) == sequential_reference(boxes, scores, labels, image_idx, 0.5, head_class)
    assert len(ours) > num_images


def test_a_plain_checkpoint_refuses_a_suppression_rule(tmp_path):
    path = str(tmp_path / "plain.pt")
    save_model_checkpoint(path, RetinaNet(2, depth=18, feature_size=16), ["person", "head"])
    load_model(path)  # no rule asked for: fine
    with pytest.raises(UserError, match="plain.pt: a plain RetinaNet .* person-triplet checkpoints only"):
        load_model(path, suppression_box="paired")


def test_paired_suppression_is_stored_and_not_exported(tmp_path):
    model = RetinaNet(2, depth=18, feature_size=16, person_triplets=True, suppression_box="paired").eval()
    assert model.model_args()["suppression_box"] == "paired"
    with pytest.raises(UserError, match="--suppression_box full"):
        export_onnx(model, str(tmp_path / "paired.onnx"), ["person", "head"])
    assert not list(tmp_path.iterdir())
