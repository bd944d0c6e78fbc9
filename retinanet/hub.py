"""Models for inference: the one place that builds a RetinaNet from what a checkpoint holds.

It sits above both the checkpoint layer (``retinanet.checkpoint``, ``retinanet.state_dicts``:
reading, architecture inference, class-head mapping, no model code) and ``retinanet.model``
(which reads ImageNet backbone files through ``retinanet.checkpoint``), so neither imports the
other back.
"""
from typing import Optional, Sequence

import torch

from retinanet.checkpoint import read_checkpoint_file, split_checkpoint
from retinanet.coco_names import COCO_CLASS_NAMES
from retinanet.errors import UserError
from retinanet.model import DEFAULT_SUPPRESSION_BOX, RetinaNet
from retinanet.state_dicts import infer_model_args, load_weights


def load_model(
    path: str,
    class_names: Optional[Sequence[str]] = None,
    depth: Optional[int] = None,
    **model_kwargs,
):
    """Build the model a checkpoint describes and load it, for inference.

    class_names: the class list the user passed; None uses the checkpoint's own names (ours) or
    the COCO names (a bare 80-class state dict). depth: checked against the checkpoint.
    Returns (model, class_names) with the model in eval mode on the CPU.
    """
    state_dict, source_names, model_args = split_checkpoint(read_checkpoint_file(path), path)
    found = infer_model_args(state_dict, path)
    if depth is not None and depth != found["depth"]:
        raise UserError(f"{path}: checkpoint is a ResNet-{found['depth']} RetinaNet, --depth {depth} was given")
    if class_names is None:
        if source_names is not None:
            class_names = source_names
        elif found["num_classes"] == len(COCO_CLASS_NAMES):
            class_names = list(COCO_CLASS_NAMES)
        else:
            raise UserError(f"{path}: the checkpoint does not record its {found['num_classes']} class names; "
                            "pass the class list (--csv_classes / --classes)")
    if found.get("person_triplets"):
        # the box its NMS was validated with, unless the caller asks for another
        model_kwargs = {"person_triplets": True,
                        "suppression_box": (model_args or {}).get("suppression_box", DEFAULT_SUPPRESSION_BOX),
                        "instances_per_anchor": found.get("instances_per_anchor", 1),
                        **model_kwargs}
    elif "suppression_box" in model_kwargs:
        raise UserError(f"{path}: a plain RetinaNet runs one NMS on its boxes; --suppression_box applies to "
                        "person-triplet checkpoints only")
    model = RetinaNet(
        num_classes=len(class_names), depth=found["depth"], feature_size=found["feature_size"], **model_kwargs
    )
    load_weights(model, path, class_names, allow_class_change=False)
    return model.eval(), list(class_names)


def inference_copy(model: RetinaNet, **settings) -> RetinaNet:
    """A copy of ``model`` built as ``load_model`` builds one from its checkpoint, in eval mode on the CPU.

    settings: detection settings of the copy (score_threshold, max_detections, ...). Its backbone
    BatchNorm is frozen and folded into the convolutions as in every checkpoint loaded for
    inference; a model trained with trainable BatchNorm computes the same function, rounded
    differently. Its weights are contiguous copies, as loaded from a file; the random generators
    are left as they were.
    """
    with torch.random.fork_rng(devices=[]):
        copy = RetinaNet(**model.model_args(), **settings)
    copy.load_state_dict(model.state_dict())
    return copy.eval()
