"""Frozen BatchNorm, folded into the convolution before it.

A frozen BatchNorm is a fixed per-channel affine map, y = x * scale + shift, so ``bn(conv(x, w))``
equals ``conv(x, w * scale) + shift``. The folded weight costs one multiply over the weights and
saves a read and a write of every activation, forwards and backwards; the conv weight stays
trainable, autograd carrying its gradient through the multiply. The norm keeps its parameters and
buffers where they were, so state dicts stay exactly those of torchvision's ResNet.
"""
from typing import Tuple

import torch
from torch import nn


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that is always in eval mode with fixed affine parameters.

    Once ``fold_frozen_batchnorms`` has handed it to the conv before it, its forward is the identity.
    """

    def __init__(self, num_features: int, **kwargs):
        super().__init__(num_features, **kwargs)
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)
        self.folded = False
        self.train(False)

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.folded else super().forward(x)

    def scale_and_shift(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(C,) scale and shift of the affine map this norm applies."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale


class ConvFrozenBatchNorm2d(nn.Conv2d):
    """Conv2d that applies the frozen BatchNorm after it within the same convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.norm.scale_and_shift()
        # nn.DataParallel replicas still point at the original norm, whose frozen values are theirs too.
        scale, shift = scale.to(x.device), shift.to(x.device)
        if self.bias is not None:
            shift = shift + self.bias * scale
        return self._conv_forward(x, self.weight * scale[:, None, None, None], shift)


def _folded_conv(conv: nn.Conv2d, norm: FrozenBatchNorm2d) -> ConvFrozenBatchNorm2d:
    """A ConvFrozenBatchNorm2d sharing ``conv``'s parameters (built on the meta device: no init work)."""
    folded = ConvFrozenBatchNorm2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode,
        device="meta",
    )
    folded.weight = conv.weight
    folded.bias = conv.bias
    # A plain attribute, not a submodule: the norm stays registered (and saved) under its own name.
    folded.__dict__["norm"] = norm
    return folded


def fold_frozen_batchnorms(module: nn.Module) -> int:
    """Fold every FrozenBatchNorm2d of ``module`` that directly follows a Conv2d into it, in place.

    Pairs are torchvision ResNet's: ``convN`` / ``bnN`` in the stem and the blocks, and ``0`` / ``1``
    in downsample branches. Returns the number of pairs folded.
    """
    count = 0
    for parent in list(module.modules()):
        children = dict(parent.named_children())
        for name, norm in children.items():
            if not isinstance(norm, FrozenBatchNorm2d) or norm.folded:
                continue
            if name.startswith("bn"):
                conv_name = "conv" + name[2:]
            elif isinstance(parent, nn.Sequential) and name.isdigit() and int(name) > 0:
                conv_name = str(int(name) - 1)
            else:
                continue
            conv = children.get(conv_name)
            if type(conv) is nn.Conv2d:
                setattr(parent, conv_name, _folded_conv(conv, norm))
                norm.folded = True
                count += 1
    return count
