"""flat_detections against a plain per-image, per-class reference that sorts everything."""
import pytest
import torch
from torchvision.ops import nms

from retinanet.box_coder import BoxCoder
from retinanet.model import DEFAULT_TOPK_PER_LEVEL
from retinanet.postprocess import flat_detections, level_topk, split_by_image
from retinanet.validation import EVAL_MAX_DETECTIONS, EVAL_SCORE_THRESHOLD, evaluation_topk_per_level


def reference_detections(logits, deltas, anchors, level_sizes, box_coder, size, topk, max_detections):
    """One image: full sort per level, threshold 0.05, decode, clip, NMS 0.5 class by class, cap."""
    scores = torch.sigmoid(logits)  # (A, K)
    num_classes = scores.shape[1]
    entries = []
    start = 0
    for count in level_sizes:
        flat = scores[start:start + count].reshape(-1)
        order = torch.argsort(flat, descending=True)[:topk]
        for entry in order.tolist():
            if flat[entry] > 0.05:
                entries.append((start + entry // num_classes, entry % num_classes, float(flat[entry])))
        start += count
    h, w = size
    found = []
    for k in range(num_classes):
        chosen = [(a, s) for a, c, s in entries if c == k]
        if not chosen:
            continue
        anchor_idx = torch.tensor([a for a, _ in chosen])
        class_scores = torch.tensor([s for _, s in chosen])
        boxes = box_coder.decode(deltas[anchor_idx], anchors[anchor_idx])
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        for i in nms(boxes, class_scores, 0.5).tolist():
            found.append((float(class_scores[i]), k, boxes[i].tolist()))
    found.sort(key=lambda d: -d[0])
    return found[:max_detections]


def detections_by_image(logits, deltas, anchors, level_sizes, box_coder, sizes, **options):
    """flat_detections on concatenated (B, A, .) inputs cut into levels, split per image."""
    flat = flat_detections(logits.split(level_sizes, dim=1), deltas.split(level_sizes, dim=1),
                           anchors.split(level_sizes), box_coder, torch.tensor(sizes, dtype=torch.float32),
                           **options)
    return split_by_image(*flat, batch_size=logits.shape[0])


def crowded_inputs(batch_size, num_classes, level_sizes, seed):
    """Anchors in a few tight clusters, so NMS suppresses most candidates; distinct random scores."""
    generator = torch.Generator().manual_seed(seed)
    num_anchors = sum(level_sizes)
    centres = torch.rand(4, 2, generator=generator) * 80 + 10
    cluster = torch.randint(0, 4, (num_anchors,), generator=generator)
    centre = centres[cluster] + torch.randn(num_anchors, 2, generator=generator)
    half = 6 + torch.rand(num_anchors, 1, generator=generator) * 4
    anchors = torch.cat([centre - half, centre + half], dim=1)
    logits = torch.randn(batch_size, num_anchors, num_classes, generator=generator) * 1.5 - 2.0
    deltas = torch.randn(batch_size, num_anchors, 4, generator=generator) * 0.2
    return logits, deltas, anchors


@pytest.mark.parametrize("num_classes,topk,max_detections",
                         [(3, 40, 5), (3, 40, 1000), (3, 1000, 300), (1, 25, 2), (4, 7, 1)])
def test_detections_equal_the_full_sort_reference(num_classes, topk, max_detections):
    level_sizes = [300, 120, 45]
    box_coder = BoxCoder()
    logits, deltas, anchors = crowded_inputs(3, num_classes, level_sizes, seed=topk + max_detections)
    sizes = [(100, 100), (90, 100), (100, 80)]
    ours = detections_by_image(logits, deltas, anchors, level_sizes, box_coder, sizes,
                               topk_per_level=topk, max_detections=max_detections)
    checked = 0
    for b, det in enumerate(ours):
        expected = reference_detections(logits[b], deltas[b], anchors, level_sizes, box_coder, sizes[b],
                                        topk, max_detections)
        got = list(zip(det["scores"].tolist(), det["labels"].tolist(), det["boxes"].tolist()))
        assert len(got) == len(expected)
        for (score, label, box), (ref_score, ref_label, ref_box) in zip(got, expected):
            assert label == ref_label
            assert score == pytest.approx(ref_score, abs=1e-6)
            assert box == pytest.approx(ref_box, abs=1e-4)
        checked += len(got)
    assert checked > 0


def test_candidate_cap_grows_until_the_detections_are_exact():
    """Every candidate sits on the same box: per class only the best survives NMS, so a cap of
    4 * max_detections candidates per image must grow until each class has been reached."""
    num_anchors, num_classes = 200, 10
    anchors = torch.tensor([[10.0, 10.0, 50.0, 50.0]]).expand(num_anchors, 4)
    # Class k's scores all lie below class k-1's, so the best 4 * 3 candidates hold classes 0 and 1 only.
    logits = -torch.arange(num_anchors * num_classes, dtype=torch.float32).reshape(num_classes, num_anchors).T
    logits = (logits / 1000.0)[None]  # (1, A, K), all scores in (0.12, 0.5]
    deltas = torch.zeros(1, num_anchors, 4)
    det = detections_by_image(logits, deltas, anchors, [num_anchors], BoxCoder(), [(64, 64)],
                              topk_per_level=10 ** 6, max_detections=3)[0]
    assert det["labels"].tolist() == [0, 1, 2]
    assert det["scores"].tolist() == pytest.approx(torch.sigmoid(torch.tensor([0.0, -0.2, -0.4])).tolist())
    assert det["boxes"].tolist() == [[10.0, 10.0, 50.0, 50.0]] * 3


def test_level_topk_takes_the_best_entries_through_the_best_anchors():
    logits = torch.tensor([[[0.0, 9.0], [8.0, 7.0], [1.0, 2.0], [6.0, 5.0]]])  # (1, A=4, K=2)
    top_logits, anchor_idx, labels = level_topk(logits, k=3)
    got = sorted(zip(top_logits[0].tolist(), anchor_idx[0].tolist(), labels[0].tolist()), reverse=True)
    assert got == [(9.0, 0, 1), (8.0, 1, 0), (7.0, 1, 1)]


def test_evaluation_keeps_the_candidates_a_crowded_level_would_cut():
    # One level: 1000 copies of one box score highest (NMS keeps one of them), then 500 boxes apart
    # from each other and from it. A level cut to the model's 1000 candidates passes only the copies.
    grid = torch.arange(500)
    apart = torch.stack([20 + 12 * (grid % 25), 20 + 12 * (grid // 25)], dim=1).float()
    anchors = torch.cat([torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(1000, 1),
                         torch.cat([apart, apart + 10], dim=1)])
    logits = torch.cat([torch.linspace(6.0, 5.0, 1000), torch.linspace(1.0, 0.0, 500)])[None, :, None]
    deltas = torch.zeros(1, 1500, 4)
    max_detections = EVAL_MAX_DETECTIONS

    def detections(topk):
        return flat_detections([logits], [deltas], [anchors], BoxCoder(), torch.tensor([[400.0, 400.0]]),
                               score_threshold=EVAL_SCORE_THRESHOLD, topk_per_level=topk,
                               max_detections=max_detections)[0]

    assert detections(DEFAULT_TOPK_PER_LEVEL).shape[0] == 1
    kept = detections(evaluation_topk_per_level(max_detections))
    assert kept.shape[0] == 501
    assert kept[1:].tolist() == anchors[1000:].tolist()  # by descending score: the grid in order
