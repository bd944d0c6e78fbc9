"""RetinaNet state dicts: the architecture their tensors describe, class rows mapped to another class
list, and loading one into a model with every mismatch named.

No model code is imported: the model is only read through ``depth``, ``feature_size``,
``anchor_generator`` and ``state_dict()``.
"""
from typing import Callable, Dict, List, Sequence

import torch

from retinanet.checkpoint import read_checkpoint_file, split_checkpoint, unwrap_model
from retinanet.coco_names import COCO_CLASS_NAMES, canonical_class_name
from retinanet.errors import UserError

CLASS_HEAD_KEYS = ("classificationModel.output.weight", "classificationModel.output.bias")
BOX_HEAD_KEYS = ("regressionModel.output.weight", "regressionModel.output.bias")
# ResNet depth -> (block type, blocks per stage): what the model builds and what a state dict shows.
RESNET_STAGES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
# Anchors at each feature-map location: 3 scales x 3 aspect ratios (retinanet.anchors, tested equal).
ANCHORS_PER_LOCATION = 9
BLOCKS_TO_DEPTH = {stages: depth for depth, stages in RESNET_STAGES.items()}


def infer_model_args(state_dict: Dict[str, torch.Tensor], path: str) -> Dict[str, int]:
    """Depth, class count and feature size read off the tensors themselves, and
    ``person_triplets: True`` for a model with three boxes per anchor (and ``instances_per_anchor: 2``
    for one that predicts two people per anchor)."""
    required = ("layer1.0.conv1.weight", "fpn.P5_1.weight", "classificationModel.output.bias")
    missing = [k for k in required if k not in state_dict]
    if missing:
        example = ", ".join(list(state_dict)[:3])
        raise UserError(f"{path}: not a RetinaNet checkpoint (no {missing[0]}; its keys start {example})")
    block = "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic"
    blocks = tuple(
        len({k.split(".")[1] for k in state_dict if k.startswith(f"layer{stage}.")}) for stage in range(1, 5)
    )
    depth = BLOCKS_TO_DEPTH.get((block, blocks))
    if depth is None:
        raise UserError(f"{path}: backbone with {block} blocks {blocks} is not a ResNet-18/34/50/101/152")
    num_anchor_outputs = state_dict["classificationModel.output.bias"].shape[0]
    box_values = state_dict["regressionModel.output.bias"].shape[0] // ANCHORS_PER_LOCATION
    if box_values not in (4, 12, 24):
        raise UserError(f"{path}: {box_values} box values per anchor: neither a plain (4) nor a person-triplet "
                        "(12, or 24 with two people per anchor) RetinaNet")
    instances = 2 if box_values == 24 else 1
    found = {
        "depth": depth,
        "num_classes": num_anchor_outputs // (ANCHORS_PER_LOCATION * instances),
        "feature_size": state_dict["fpn.P5_1.weight"].shape[0],
    }
    if box_values > 4:
        found["person_triplets"] = True
    if instances > 1:
        found["instances_per_anchor"] = instances
    return found


def class_index_map(source_names: Sequence[str], target_names: Sequence[str]) -> List[int]:
    """For each target class, the index of the same class (by canonical name) in the source, or -1."""
    index = {canonical_class_name(name): i for i, name in enumerate(source_names)}
    return [index.get(canonical_class_name(name), -1) for name in target_names]


def remap_class_head(
    state_dict: Dict[str, torch.Tensor],
    mapping: Sequence[int],
    initial: Dict[str, torch.Tensor],
    num_anchors: int,
) -> Dict[str, torch.Tensor]:
    """Rebuild the classification output conv for a new class list.

    The output channel of (anchor a, class k) is a * K + k (anchor-major). Target class j takes the
    source rows of class mapping[j]; classes mapped to -1 keep ``initial`` (the prior init).
    """
    state_dict = dict(state_dict)
    mapping_t = torch.as_tensor(mapping, dtype=torch.int64)
    copied = mapping_t >= 0
    for key in CLASS_HEAD_KEYS:
        source = state_dict[key].reshape(num_anchors, -1, *state_dict[key].shape[1:])  # (A, K_src, ...)
        target = initial[key].clone().reshape(num_anchors, len(mapping), *initial[key].shape[1:])  # (A, K_tgt, ...)
        target[:, copied] = source[:, mapping_t[copied]].to(target.dtype)
        state_dict[key] = target.reshape(initial[key].shape)
    return state_dict


def load_weights(
    model: torch.nn.Module,
    path: str,
    class_names: Sequence[str],
    allow_class_change: bool = False,
    log: Callable[[str], None] = print,
) -> Dict[str, List[str]]:
    """Load a checkpoint file's weights into ``model`` (built for ``class_names``).

    Classes are matched by name when the checkpoint records them (a bare 80-class state dict is
    taken to be the published COCO checkpoint). A different class list is an error unless
    ``allow_class_change`` (fine-tuning): then rows of classes found by name are copied and new
    classes keep the prior init. Returns {"copied": [...], "initialised": [...]} class names.
    """
    state_dict, source_names, _ = split_checkpoint(read_checkpoint_file(path), path)
    found = infer_model_args(state_dict, path)
    model = unwrap_model(model)
    if found["depth"] != model.depth:
        raise UserError(f"{path}: checkpoint is a ResNet-{found['depth']} RetinaNet, "
                        f"the model is ResNet-{model.depth}; pass --depth {found['depth']}")
    other_variant = found.get("person_triplets", False) != model.person_triplets
    if other_variant and not allow_class_change:
        kind = {True: "a person-triplet", False: "a plain"}
        raise UserError(f"{path}: checkpoint is {kind[found.get('person_triplets', False)]} RetinaNet, the model "
                        f"{kind[model.person_triplets]} one; fine-tune with train.py --model_path to change")
    instances = found.get("instances_per_anchor", 1)
    other_instances = instances != model.instances_per_anchor
    if other_instances and not allow_class_change:
        raise UserError(f"{path}: checkpoint predicts {instances} people per anchor, the model "
                        f"{model.instances_per_anchor}; fine-tune with train.py --model_path to change")
    if found["feature_size"] != model.feature_size:
        raise UserError(f"{path}: checkpoint has {found['feature_size']} FPN channels, the model "
                        f"{model.feature_size}; pass --feature_size {found['feature_size']}")
    if source_names is None and found["num_classes"] == len(COCO_CLASS_NAMES):
        source_names = list(COCO_CLASS_NAMES)

    target_names = list(class_names)
    expected = model.state_dict()
    for key, value in expected.items():
        # Checkpoints saved by torch < 0.4.1 have no BatchNorm counters.
        if key.endswith("num_batches_tracked") and key not in state_dict:
            state_dict[key] = value.clone()

    if source_names is not None:
        mapping = class_index_map(source_names, target_names)
    elif found["num_classes"] == len(target_names):
        mapping = list(range(len(target_names)))  # no names recorded: same count, same order
    else:
        mapping = [-1] * len(target_names)
    same_classes = len(target_names) == found["num_classes"] and sorted(mapping) == list(range(len(target_names)))
    if not same_classes and not allow_class_change:
        shown = source_names if source_names is not None else f"{found['num_classes']} unnamed classes"
        raise UserError(f"{path}: checkpoint classes {_short(shown)} differ from the class list "
                        f"{_short(target_names)}; fine-tune with train.py --model_path to change classes")
    if other_instances:
        # Another number of predictions per anchor: both output convs have other shapes and start
        # from their own init; everything below them carries over.
        state_dict.update({key: expected[key] for key in CLASS_HEAD_KEYS + BOX_HEAD_KEYS})
        log(f"loaded {path}: {instances} prediction(s) per anchor in the checkpoint, "
            f"{model.instances_per_anchor} in the model; class and box output layers initialised")
    elif mapping != list(range(found["num_classes"])) or not same_classes:
        initial = {key: expected[key] for key in CLASS_HEAD_KEYS}
        # each of an anchor's predictions has its own K class rows (anchor-major, then prediction)
        state_dict = remap_class_head(state_dict, mapping, initial,
                                      model.anchor_generator.num_anchors_per_location * instances)

    if other_variant and not other_instances:
        # Fine-tuning a plain model into person triplets (or back): everything but the box output
        # conv carries over; that conv has another shape and starts from its own init.
        state_dict.update({key: expected[key] for key in BOX_HEAD_KEYS})
        log(f"loaded {path}: a {'plain' if model.person_triplets else 'person-triplet'} model's weights; "
            "box output layer initialised for this model's boxes")

    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        problem = f"missing keys {missing[:3]}" if missing else f"unexpected keys {unexpected[:3]}"
        raise UserError(f"{path}: does not fit a ResNet-{model.depth} RetinaNet ({problem})")
    for key, value in state_dict.items():
        if value.shape != expected[key].shape:
            raise UserError(
                f"{path}: {key} has shape {tuple(value.shape)}, the model expects {tuple(expected[key].shape)}"
            )
    model.load_state_dict(state_dict)

    copied = [name for name, source in zip(target_names, mapping) if source >= 0]
    initialised = [name for name, source in zip(target_names, mapping) if source < 0]
    if not same_classes:
        log(f"loaded {path}: class rows copied by name for {len(copied)} classes; "
            f"initialised from the prior: {', '.join(initialised) if initialised else 'none'}")
    return {"copied": copied, "initialised": initialised}


def _short(names, limit: int = 6) -> str:
    if isinstance(names, str):
        return names
    names = list(names)
    shown = ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")
    return f"[{shown}]"
