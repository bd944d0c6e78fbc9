import os

import pytest
import torch
from torchvision.ops import nms

from retinanet.model import RetinaNet, build_retinanet, resnet18, resnet50
from tests.helpers import logical_order

# Every key, shape and dtype of the published pytorch-retinanet model for 80 COCO classes.
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def read_reference(depth):
    path = os.path.join(FIXTURES, f"pytorch_retinanet_resnet{depth}_coco80_state_dict_keys.tsv")
    with open(path) as handle:
        rows = [line.rstrip("\n").split("\t") for line in handle][1:]
    return [(key, () if shape == "scalar" else tuple(int(s) for s in shape.split("x")), dtype)
            for key, shape, dtype in rows]


@pytest.mark.parametrize("depth,factory", [(18, resnet18), (50, resnet50)])
def test_state_dict_layout_equals_published_model(depth, factory):
    model = factory(80)
    ours = [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()]
    assert ours == read_reference(depth)


def test_prior_init_and_frozen_batchnorm():
    model = RetinaNet(num_classes=3, depth=18, feature_size=32)
    bias = model.classificationModel.output.bias
    assert torch.allclose(torch.sigmoid(bias), torch.full_like(bias, 0.01))
    model.train()
    assert not model.bn1.training and not model.layer3[0].bn2.training
    assert model.fpn.training
    assert not model.bn1.weight.requires_grad
    unfrozen = RetinaNet(num_classes=3, depth=18, feature_size=32, freeze_bn=False).train()
    assert unfrozen.bn1.training and unfrozen.bn1.weight.requires_grad


def test_unknown_depth_is_a_clear_error():
    from retinanet.errors import UserError

    with pytest.raises(UserError, match="depth must be one of"):
        build_retinanet(2, depth=42)


def small_model(**kwargs):
    model = RetinaNet(num_classes=3, depth=18, feature_size=32, **kwargs).eval()
    with torch.no_grad(), logical_order(model):
        # Scores around 0.1 so that post-processing has real work to do: small hidden head weights
        # keep the logits near the bias.
        for head in (model.classificationModel, model.regressionModel):
            for conv in (head.conv1, head.conv2, head.conv3, head.conv4):
                conv.weight.normal_(0, 0.01)
        model.classificationModel.output.bias.fill_(-2.2)
        model.classificationModel.output.weight.normal_(0, 0.5)
        model.regressionModel.output.weight.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("batch_size", [1, 3])
def test_inference_output_contract(batch_size):
    model = small_model()
    with torch.no_grad():
        detections = model(torch.randn(batch_size, 3, 96, 128))
    assert len(detections) == batch_size
    for det in detections:
        assert set(det) == {"boxes", "scores", "labels"}
        n = det["boxes"].shape[0]
        assert 0 < n <= 300
        assert det["boxes"].shape == (n, 4) and det["scores"].shape == (n,) and det["labels"].dtype == torch.int64
        assert (det["scores"] > 0.05).all()
        assert torch.all(det["scores"][:-1] >= det["scores"][1:])
        assert (det["boxes"][:, 0] >= 0).all() and (det["boxes"][:, 2] <= 128).all()
        assert (det["boxes"][:, 3] <= 96).all() and (det["labels"] < 3).all()


def test_batched_inference_equals_one_by_one_and_scales_back():
    model = small_model()
    images = torch.randn(3, 3, 64, 96)
    sizes = [(64, 96), (60, 80), (64, 90)]
    scales = [1.0, 0.5, 2.0]
    with torch.no_grad():
        batched = model(images, image_sizes=sizes, image_scales=scales)
        single = [model(images[i:i + 1], image_sizes=sizes[i:i + 1], image_scales=scales[i:i + 1])[0] for i in range(3)]
    for b, s, (h, w), scale in zip(batched, single, sizes, scales):
        # Batched convolutions differ from single ones by ~1e-6, which may swap near-tied scores:
        # compare as sets of (label, box, score) rather than position by position.
        assert b["labels"].shape == s["labels"].shape
        assert torch.allclose(b["scores"], s["scores"], atol=1e-5)
        same_label = b["labels"][:, None] == s["labels"][None, :]
        box_distance = (b["boxes"][:, None, :] - s["boxes"][None, :, :]).abs().amax(dim=2)
        score_distance = (b["scores"][:, None] - s["scores"][None, :]).abs()
        matches = same_label & (box_distance < 1e-3) & (score_distance < 1e-5)
        assert matches.any(dim=1).all() and matches.any(dim=0).all()
        assert (b["boxes"][:, 2] <= w / scale + 1e-4).all() and (b["boxes"][:, 3] <= h / scale + 1e-4).all()


def test_postprocessing_equals_per_class_reference_with_wide_limits():
    """The original project's post-processing: per class, scores > 0.05, NMS 0.5 — no top-k, no cap."""
    model = small_model(topk_per_level=10 ** 6, max_detections=10 ** 6)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = model(images)[0]
        features = model.features(images)
        logits, deltas = (torch.cat(levels, dim=1) for levels in model.head_outputs(features))
        anchors = model.anchor_generator((64, 64), images.device)
        scores = torch.sigmoid(logits[0])
        boxes = model.box_coder.decode(deltas[0], anchors)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, 64)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, 64)
    expected = []
    for k in range(3):
        keep = scores[:, k] > 0.05
        class_boxes, class_scores = boxes[keep], scores[keep, k]
        for i in nms(class_boxes, class_scores, 0.5).tolist():
            expected.append((round(float(class_scores[i]), 5), k, [round(float(v), 2) for v in class_boxes[i]]))
    got = [(round(float(s), 5), int(lab), [round(float(v), 2) for v in box])
           for s, lab, box in zip(ours["scores"], ours["labels"], ours["boxes"])]
    assert sorted(got) == sorted(expected)
    assert len(got) > 20


def test_imagenet_backbone_weights_from_a_file_or_a_clear_error(tmp_path, monkeypatch):
    from torchvision.models import resnet18 as torchvision_resnet18

    from retinanet.errors import UserError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))
    expected = r"download https://\S+/resnet18-\w+\.pth to .*empty_cache.* --backbone_weights"
    with pytest.raises(UserError, match=expected):
        build_retinanet(2, depth=18, pretrained=True)

    imagenet = torchvision_resnet18()
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(imagenet.state_dict(), path)
    model = build_retinanet(2, depth=18, backbone_weights=str(path), feature_size=16)
    assert torch.equal(model.layer4[1].conv2.weight, imagenet.layer4[1].conv2.weight)
    assert torch.equal(model.bn1.running_var, imagenet.bn1.running_var)

    torch.save(torchvision_resnet18(num_classes=5).state_dict() | {"extra.weight": torch.zeros(1)}, path)
    with pytest.raises(UserError, match="not ImageNet ResNet-18 weights"):
        build_retinanet(2, depth=18, backbone_weights=str(path), feature_size=16)
