"""RetinaNet: ResNet backbone, feature pyramid P3-P7, shared classification and box subnets.

Parameter names follow the pytorch-retinanet state-dict layout (backbone at the top level,
``fpn.P5_1`` ..., ``regressionModel.*``, ``classificationModel.*``) so its published checkpoints
load as they are, and ours load back into it.
"""
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet as tv_resnet

from retinanet.anchors import AnchorGenerator
from retinanet.box_coder import BoxCoder
from retinanet.checkpoint import read_checkpoint_file
from retinanet.errors import UserError
from retinanet.frozen_batchnorm import FrozenBatchNorm2d, fold_frozen_batchnorms
from retinanet.losses import retinanet_loss
from retinanet.postprocess import CANDIDATES_PER_DETECTION, flat_detections, split_by_image
from retinanet.state_dicts import RESNET_STAGES

# A person-triplet model's boxes per detection, in the order of its box deltas (and of
# postprocess.TRIPLET_BOX_KEYS). NMS compares one of them (``suppression_box``).
PERSON_BOX_KINDS = ("full", "visible", "head")
# Candidates each pyramid level passes to NMS at inference (torchvision's RetinaNet's): a speed setting.
DEFAULT_TOPK_PER_LEVEL = 1000
# What a triplet model's NMS compares: one of the three boxes, or "paired": two people whose full
# bodies overlap stay apart when their heads and their visible bodies do (postprocess.paired_nms).
# Measured on dense synthetic crowds (benchmarks/bench_crowd.py, README "People in crowds"): NMS on
# the head or the visible body alone keeps every overlapped person but also duplicates whose small
# boxes came out apart, at a much higher MR^-2.
SUPPRESSION_BOXES = PERSON_BOX_KINDS + ("paired",)
DEFAULT_SUPPRESSION_BOX = "full"
# A triplet model's predictions per anchor: 1, or 2 (CrowdDet's two people per anchor, trained with
# the EMD loss, losses.emd_targets, and kept apart by Set NMS, postprocess.set_nms).
INSTANCES_PER_ANCHOR = (1, 2)

_BLOCKS = {"basic": tv_resnet.BasicBlock, "bottleneck": tv_resnet.Bottleneck}
# depth -> (block class, blocks per stage, torchvision's ImageNet weights enum)
RESNET_DEPTHS = {
    depth: (_BLOCKS[block], list(stages), getattr(tv_resnet, f"ResNet{depth}_Weights"))
    for depth, (block, stages) in RESNET_STAGES.items()
}


def he_normal_(conv: nn.Conv2d) -> None:
    """He initialisation (fan-out, as torchvision's ResNet and the original project's heads) and zero bias.

    The paper's N(0, 0.01) shrinks the signal through the four 256-channel head convs about 75-fold
    at the start, which a pretrained backbone forgives and a from-scratch run pays for: on the
    learning benchmark it lost 0.015 person and 0.013 head AP@0.5 in 5 epochs.
    """
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(conv.bias)


class FeaturePyramid(nn.Module):
    """FPN over C3-C5: P3-P5 by top-down addition of upsampled 1x1 laterals, P6 = conv(C5), P7 = conv(relu(P6))."""

    def __init__(self, c3_channels: int, c4_channels: int, c5_channels: int, feature_size: int = 256):
        super().__init__()
        self.P5_1 = nn.Conv2d(c5_channels, feature_size, 1)
        self.P5_2 = nn.Conv2d(feature_size, feature_size, 3, padding=1)
        self.P4_1 = nn.Conv2d(c4_channels, feature_size, 1)
        self.P4_2 = nn.Conv2d(feature_size, feature_size, 3, padding=1)
        self.P3_1 = nn.Conv2d(c3_channels, feature_size, 1)
        self.P3_2 = nn.Conv2d(feature_size, feature_size, 3, padding=1)
        self.P6 = nn.Conv2d(c5_channels, feature_size, 3, stride=2, padding=1)
        self.P7_1 = nn.ReLU()
        self.P7_2 = nn.Conv2d(feature_size, feature_size, 3, stride=2, padding=1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                he_normal_(module)

    def forward(self, c3: torch.Tensor, c4: torch.Tensor, c5: torch.Tensor) -> List[torch.Tensor]:
        # The lateral sum is upsampled before its 3x3 conv, as in the published checkpoint.
        p5 = self.P5_1(c5)
        p4 = self.P4_1(c4) + F.interpolate(p5, size=c4.shape[-2:], mode="nearest")
        p3 = self.P3_1(c3) + F.interpolate(p4, size=c3.shape[-2:], mode="nearest")
        p6 = self.P6(c5)
        p7 = self.P7_2(self.P7_1(p6))
        return [self.P3_2(p3), self.P4_2(p4), self.P5_2(p5), p6, p7]


class Subnet(nn.Module):
    """Four 3x3 conv + ReLU layers and a 3x3 output conv, shared by all pyramid levels.

    Output channel c belongs to anchor c // values_per_anchor (anchor-major layout).
    """

    def __init__(self, in_channels: int, num_anchors: int, values_per_anchor: int, feature_size: int = 256):
        super().__init__()
        self.values_per_anchor = values_per_anchor
        self.conv1 = nn.Conv2d(in_channels, feature_size, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(feature_size, feature_size, 3, padding=1)
        self.act2 = nn.ReLU()
        self.conv3 = nn.Conv2d(feature_size, feature_size, 3, padding=1)
        self.act3 = nn.ReLU()
        self.conv4 = nn.Conv2d(feature_size, feature_size, 3, padding=1)
        self.act4 = nn.ReLU()
        self.output = nn.Conv2d(feature_size, num_anchors * values_per_anchor, 3, padding=1)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            he_normal_(conv)
        # Zero outputs: every anchor starts at the prior score (bias set by RetinaNet) and at its own box.
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """features: per level (B, C, H_l, W_l) -> per level (B, H_l W_l A, values_per_anchor)."""
        outputs = []
        for x in features:
            x = self.act1(self.conv1(x))
            x = self.act2(self.conv2(x))
            x = self.act3(self.conv3(x))
            x = self.act4(self.conv4(x))
            x = self.output(x)
            # (B, A*V, H, W) -> (B, H, W, A*V) -> (B, H*W*A, V): row, column, anchor order.
            outputs.append(x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.values_per_anchor))
        return outputs


class RetinaNet(nn.Module):
    """RetinaNet detector.

    Training: ``model(images, targets)`` with images (B, 3, H, W) (H, W multiples of 32) and
    targets a list of ``{"boxes": (N, 4) x1y1x2y2, "labels": (N,), "ignore": (M, 4) optional,
    "ignore_labels": (M,) optional}`` returns ``{"classification", "regression"}`` losses.
    Inference: ``model(images)`` returns per image ``{"boxes", "scores", "labels"}``.

    person_triplets: the person-triplet variant. Class 0 is a person; every anchor regresses three
    boxes (``PERSON_BOX_KINDS``: full body, visible body, head) and each detection carries all three:
    "boxes" (full), "visible_boxes", "head_boxes". Targets add "visible_boxes", "head_boxes",
    "visible_valid" and "head_valid" (``losses.build_targets``). NMS compares the ``suppression_box``
    of two detections, or with "paired" decides by all three (``postprocess.paired_nms``). With
    num_classes=2, class 1 is a head detected on its own (its box is box 0, repeated in all three),
    and each person's head box is the head detection its regressed head overlaps best (``postprocess.attach_heads``).
    instances_per_anchor=2 (triplets): every anchor predicts two detections, each with its scores
    and boxes, trained on the two people the anchor overlaps most by the EMD loss
    (``losses.emd_targets``); NMS never lets one of an anchor's two detections remove the other (Set NMS).
    The plain model (False) keeps the published layout exactly.
    """

    def __init__(
        self,
        num_classes: int,
        depth: int = 50,
        feature_size: int = 256,
        prior_probability: float = 0.01,
        freeze_bn: bool = True,
        score_threshold: float = 0.05,
        topk_per_level: int = DEFAULT_TOPK_PER_LEVEL,
        nms_iou_threshold: float = 0.5,
        max_detections: int = 300,
        person_triplets: bool = False,
        suppression_box: str = DEFAULT_SUPPRESSION_BOX,
        instances_per_anchor: int = 1,
    ):
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise UserError(f"ResNet depth must be one of {sorted(RESNET_DEPTHS)}, got {depth}")
        if suppression_box not in SUPPRESSION_BOXES:
            raise UserError(f"the suppression box must be one of {', '.join(SUPPRESSION_BOXES)}, "
                            f"got {suppression_box!r}")
        if instances_per_anchor not in INSTANCES_PER_ANCHOR or (instances_per_anchor > 1 and not person_triplets):
            raise UserError(f"predictions per anchor: 1, or 2 for a person-triplet model; got {instances_per_anchor}"
                            + ("" if person_triplets else " for a plain model"))
        if person_triplets and num_classes not in (1, 2):
            raise UserError(f"a person-triplet model has one class (person) or two (person, head), got {num_classes}")
        block, layers, _ = RESNET_DEPTHS[depth]
        self.depth = depth
        self.num_classes = num_classes
        self.feature_size = feature_size
        self.freeze_bn = freeze_bn
        self.score_threshold = score_threshold
        self.topk_per_level = topk_per_level
        self.nms_iou_threshold = nms_iou_threshold
        self.max_detections = max_detections
        self.person_triplets = bool(person_triplets)
        self.suppression_box = suppression_box
        self.boxes_per_anchor = len(PERSON_BOX_KINDS) if self.person_triplets else 1
        self.instances_per_anchor = int(instances_per_anchor)
        # A triplet model's second class: heads detected on their own, which persons take their head from.
        self.head_class = 1 if self.person_triplets and num_classes == 2 else None

        # A frozen BatchNorm is folded into its conv: no separate pass over the activations.
        resnet = tv_resnet.ResNet(block, layers, norm_layer=FrozenBatchNorm2d if freeze_bn else None)
        if freeze_bn:
            fold_frozen_batchnorms(resnet)
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        expansion = block.expansion
        self.fpn = FeaturePyramid(128 * expansion, 256 * expansion, 512 * expansion, feature_size)

        self.anchor_generator = AnchorGenerator()
        self.box_coder = BoxCoder()
        # each of an anchor's predictions is a row of the subnets' outputs, as if it were an anchor of its own
        num_anchors = self.anchor_generator.num_anchors_per_location * self.instances_per_anchor
        self.regressionModel = Subnet(feature_size, num_anchors, 4 * self.boxes_per_anchor, feature_size)
        self.classificationModel = Subnet(feature_size, num_anchors, num_classes, feature_size)
        # Every anchor starts as background with probability 1 - prior, so the first focal losses
        # are not swamped by ~100k easy negatives.
        nn.init.constant_(self.classificationModel.output.bias, -math.log((1 - prior_probability) / prior_probability))
        # Channels-last is the fast layout of oneDNN's and cuDNN's convolutions (about 1.3x here on the
        # CPU); checkpoints still hold contiguous tensors (retinanet.checkpoint) and load into it as they are.
        self.to(memory_format=torch.channels_last)

    def model_args(self) -> Dict[str, object]:
        """Constructor arguments that rebuild this architecture (stored in checkpoints).

        A plain model's are exactly the three of the published layout; a person-triplet model adds
        ``person_triplets`` and the ``suppression_box`` it was trained and validated with, and
        ``instances_per_anchor`` when it is not 1.
        """
        args = {"num_classes": self.num_classes, "depth": self.depth, "feature_size": self.feature_size}
        if self.person_triplets:
            args.update(person_triplets=True, suppression_box=self.suppression_box)
        if self.instances_per_anchor != 1:
            args.update(instances_per_anchor=self.instances_per_anchor)
        return args

    def features(self, images: torch.Tensor) -> List[torch.Tensor]:
        """images (B, 3, H, W), H and W multiples of 32 -> pyramid features P3..P7, each (B, C, H_l, W_l)."""
        images = images.contiguous(memory_format=torch.channels_last)
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return self.fpn(c3, c4, c5)

    def head_outputs(self, features: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Pyramid features -> per level class logits (B, A_l I, K) and box deltas (B, A_l I, 4 S), S boxes
        per prediction, I predictions per anchor (row a I + i: prediction i of anchor a)."""
        return self.classificationModel(features), self.regressionModel(features)

    def anchors(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """Pyramid features -> per level anchors (A_l I, 4) x1y1x2y2 of the head outputs' rows (each anchor
        once per prediction)."""
        levels = self.anchor_generator.level_anchors(features)
        if self.instances_per_anchor == 1:
            return levels
        return [anchors.repeat_interleave(self.instances_per_anchor, dim=0) for anchors in levels]

    def losses(self, images: torch.Tensor, targets: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """Focal and box losses of a batch: {"classification": (), "regression": ()} (see the class docstring)."""
        if len(targets) != images.shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {images.shape[0]} images")
        features = self.features(images)
        level_logits, level_deltas = self.head_outputs(features)
        return retinanet_loss(torch.cat(level_logits, dim=1), torch.cat(level_deltas, dim=1),
                              self.anchor_generator.all_anchors(features), targets, self.box_coder)

    def flat_detections(
        self,
        images: torch.Tensor,
        score_threshold: Optional[Union[float, torch.Tensor]] = None,
        image_sizes: Optional[torch.Tensor] = None,
        candidates_per_detection: Optional[int] = CANDIDATES_PER_DETECTION,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) -> boxes (D, 4 S), scores (D,), labels (D,), batch_index (D,) for the whole
        batch, grouped by image and best first within an image (``postprocess.flat_detections``; S = 3
        for person triplets: full, visible, head in columns 0-3, 4-7, 8-11).

        score_threshold: default ``self.score_threshold``; image_sizes: (B, 2) (h, w) to clip boxes to,
        default the padded size. The exported graph is this method with ``candidates_per_detection=None``.
        """
        features = self.features(images)
        level_logits, level_deltas = self.head_outputs(features)
        if image_sizes is None:
            # A Shape op under tracing, where images.shape[2:] would be frozen to the sample's size.
            image_sizes = torch._shape_as_tensor(images)[2:].to(device=images.device, dtype=torch.float32)[None]
        return flat_detections(
            level_logits,
            level_deltas,
            self.anchors(features),
            self.box_coder,
            image_sizes,
            score_threshold=self.score_threshold if score_threshold is None else score_threshold,
            topk_per_level=self.topk_per_level,
            nms_iou_threshold=self.nms_iou_threshold,
            max_detections=self.max_detections,
            candidates_per_detection=candidates_per_detection,
            suppression_box=PERSON_BOX_KINDS.index(self.suppression_box)
            if self.person_triplets and self.suppression_box in PERSON_BOX_KINDS else 0,
            boxes_per_anchor=self.boxes_per_anchor,
            head_class=self.head_class,
            paired=self.person_triplets and self.suppression_box == "paired",
            instances_per_anchor=self.instances_per_anchor,
        )

    @torch.inference_mode()
    def detections(
        self,
        images: torch.Tensor,
        image_sizes: Optional[Sequence[Tuple[int, int]]] = None,
        image_scales: Optional[Sequence[float]] = None,
    ) -> List[Dict[str, torch.Tensor]]:
        """images (B, 3, H, W) -> per image {"boxes": (D, 4) x1y1x2y2, "scores": (D,), "labels": (D,)}
        (person triplets: also "visible_boxes" and "head_boxes", each (D, 4)).

        image_sizes: per image (h, w) of its unpadded part, to clip boxes to (default: the padded size,
        as the original project); image_scales: resize scale per image, so boxes come back in original
        image coordinates.
        """
        sizes = None
        if image_sizes is not None:
            sizes = torch.as_tensor(image_sizes, dtype=torch.float32, device=images.device).reshape(-1, 2)
        flat = self.flat_detections(images, image_sizes=sizes)
        return split_by_image(*flat, batch_size=images.shape[0], image_scales=image_scales)

    def forward(
        self,
        images: torch.Tensor,
        targets: Optional[List[Dict[str, torch.Tensor]]] = None,
        image_sizes: Optional[Sequence[Tuple[int, int]]] = None,
        image_scales: Optional[Sequence[float]] = None,
    ):
        """``losses(images, targets)`` with targets, else ``detections(images, image_sizes, image_scales)``."""
        if targets is not None:
            return self.losses(images, targets)
        return self.detections(images, image_sizes, image_scales)


def imagenet_weights_file(depth: int) -> Tuple[str, str]:
    """(url, path in torchvision's cache) of the ImageNet weights torchvision would download."""
    weights = RESNET_DEPTHS[depth][2].IMAGENET1K_V1
    cache_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
    return weights.url, os.path.join(cache_dir, os.path.basename(weights.url))


def load_backbone_weights(model: RetinaNet, path: Optional[str] = None) -> None:
    """Load ImageNet ResNet weights into the backbone from ``path`` or torchvision's cache; never downloads."""
    url, cached = imagenet_weights_file(model.depth)
    if path is None:
        if not os.path.exists(cached):
            raise UserError(
                f"ImageNet weights for ResNet-{model.depth} are not in torchvision's cache and nothing is "
                f"downloaded here: download {url} to {cached}, or pass its path with --backbone_weights"
            )
        path = cached
    state = read_checkpoint_file(path)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    backbone_keys = {k for k in model.state_dict() if k.split(".")[0] in ("conv1", "bn1", "layer1", "layer2",
                                                                            "layer3", "layer4")}
    missing = sorted(backbone_keys - {k for k in state if not k.endswith("num_batches_tracked")}
                     - {k for k in backbone_keys if k.endswith("num_batches_tracked")})
    unexpected = sorted(set(state) - backbone_keys)
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise UserError(f"{path}: not ImageNet ResNet-{model.depth} weights ({detail})")
    model.load_state_dict(state, strict=False)


def build_retinanet(
    num_classes: int, depth: int = 50, pretrained: bool = False, backbone_weights: Optional[str] = None, **kwargs
) -> RetinaNet:
    """The one builder behind the ``resnet18`` ... ``resnet152`` factories.

    pretrained / backbone_weights: start the backbone from ImageNet weights (a file path, or
    torchvision's cache when only ``pretrained`` is set).
    """
    model = RetinaNet(num_classes, depth=depth, **kwargs)
    if pretrained or backbone_weights:
        load_backbone_weights(model, backbone_weights)
    return model


def resnet18(num_classes: int, pretrained: bool = False, **kwargs) -> RetinaNet:
    return build_retinanet(num_classes, 18, pretrained, **kwargs)


def resnet34(num_classes: int, pretrained: bool = False, **kwargs) -> RetinaNet:
    return build_retinanet(num_classes, 34, pretrained, **kwargs)


def resnet50(num_classes: int, pretrained: bool = False, **kwargs) -> RetinaNet:
    return build_retinanet(num_classes, 50, pretrained, **kwargs)


def resnet101(num_classes: int, pretrained: bool = False, **kwargs) -> RetinaNet:
    return build_retinanet(num_classes, 101, pretrained, **kwargs)


def resnet152(num_classes: int, pretrained: bool = False, **kwargs) -> RetinaNet:
    return build_retinanet(num_classes, 152, pretrained, **kwargs)
