"""Frozen BatchNorm folded into its conv: same outputs and gradients as conv followed by BatchNorm."""
import torch
from torch import nn

from retinanet.frozen_batchnorm import ConvFrozenBatchNorm2d, FrozenBatchNorm2d, fold_frozen_batchnorms
from retinanet.model import RetinaNet


def randomise_batchnorms(model: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
                module.running_var.copy_(torch.rand(n, generator=generator) * 2 + 0.2)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.2)


def test_folded_pair_matches_conv_then_batchnorm_forward_and_backward():
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(5)).eval()
    randomise_batchnorms(reference, seed=1)
    folded = nn.Sequential(nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=False), FrozenBatchNorm2d(5))
    folded.load_state_dict(reference.state_dict())
    assert fold_frozen_batchnorms(folded) == 1
    assert isinstance(folded[0], ConvFrozenBatchNorm2d) and folded[1].folded
    assert list(folded.state_dict()) == list(reference.state_dict())

    x = torch.randn(2, 3, 9, 11, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out, out_ref = folded(x), reference(x_ref)
    assert torch.allclose(out, out_ref, atol=1e-5)
    grad = torch.randn_like(out)
    out.backward(grad)
    out_ref.backward(grad)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5)
    assert torch.allclose(folded[0].weight.grad, reference[0].weight.grad, atol=1e-4)
    assert folded[1].weight.grad is None  # frozen: no gradient reaches the norm


def test_frozen_batchnorm_stays_in_eval_mode_and_follows_loaded_values():
    norm = FrozenBatchNorm2d(4)
    norm.train()
    assert not norm.training and not norm.weight.requires_grad
    x = torch.randn(2, 4, 3, 3)
    norm.load_state_dict({"weight": torch.full((4,), 2.0), "bias": torch.ones(4), "running_mean": torch.ones(4),
                          "running_var": torch.full((4,), 4.0 - 1e-5), "num_batches_tracked": torch.tensor(0)})
    assert torch.allclose(norm(x), (x - 1) / 2 * 2 + 1, atol=1e-6)  # unfolded: a plain eval-mode norm


def backbone_output(model: RetinaNet, images: torch.Tensor) -> torch.Tensor:
    """C5 (B, 512, H/32, W/32) of a ResNet-18 RetinaNet."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


def test_retinanet_with_folded_norms_predicts_as_the_unfolded_model():
    frozen = RetinaNet(num_classes=3, depth=18, feature_size=32)
    plain = RetinaNet(num_classes=3, depth=18, feature_size=32, freeze_bn=False)
    randomise_batchnorms(plain, seed=2)
    # Loading after construction: the folded convs must read the norms' new values.
    frozen.load_state_dict(plain.state_dict())
    # Stem, two convs per BasicBlock (8 blocks), three downsample branches.
    assert sum(isinstance(m, ConvFrozenBatchNorm2d) for m in frozen.modules()) == 1 + 16 + 3
    assert not any(isinstance(m, ConvFrozenBatchNorm2d) for m in plain.modules())
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        c5, c5_ref = backbone_output(frozen.eval(), images), backbone_output(plain.eval(), images)
        logits, deltas = (torch.cat(levels, dim=1) for levels in frozen.head_outputs(frozen.features(images)))
        logits_ref, deltas_ref = (torch.cat(levels, dim=1) for levels in plain.head_outputs(plain.features(images)))
    assert c5.abs().mean() > 0.1
    assert torch.allclose(c5, c5_ref, rtol=1e-4, atol=1e-4)
    assert torch.allclose(logits, logits_ref, atol=1e-4)
    assert torch.allclose(deltas, deltas_ref, atol=1e-4)
