"""Reading and writing checkpoints: ours, bare state dicts, DataParallel/DDP ones, pre-0.4.1 ones.

Our checkpoint is a dict ``{"format": CHECKPOINT_FORMAT, "model": state_dict, "class_names": [...],
"model_args": {...}, ...training state}``; its ``model`` entry has the pytorch-retinanet key layout,
so ``torch.save(ckpt["model"], ...)`` gives a file that project loads. Every tensor is written
contiguous, whatever memory format the model trained in (channels-last here), so code that
``.view()``s a loaded weight works. Everything is read with ``weights_only=True``: a checkpoint can
never run code.
"""
import os
import pickle
import shutil
import zipfile
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from retinanet.coco_names import COCO_CLASS_NAMES, canonical_class_name
from retinanet.errors import UserError
from retinanet.io_utils import atomic_path

CHECKPOINT_FORMAT = "retinanet-checkpoint/1"
CLASS_HEAD_KEYS = ("classificationModel.output.weight", "classificationModel.output.bias")
BLOCKS_TO_DEPTH = {
    ("basic", (2, 2, 2, 2)): 18,
    ("basic", (3, 4, 6, 3)): 34,
    ("bottleneck", (3, 4, 6, 3)): 50,
    ("bottleneck", (3, 4, 23, 3)): 101,
    ("bottleneck", (3, 8, 36, 3)): 152,
}


def read_checkpoint_file(path: str):
    """torch.load with weights_only=True onto the CPU; any failure is a one-line UserError."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: checkpoint file not found")
    with open(path, "rb") as handle:
        magic = handle.read(2)
    # torch.save writes a zip archive (torch >= 1.6) or a raw pickle (protocol 2+, first byte 0x80).
    if magic != b"PK" and not magic.startswith(b"\x80"):
        raise UserError(f"{path}: not a readable PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower() or "weights_only" in str(error).lower():
            raise UserError(
                f"{path}: holds pickled Python objects (e.g. a whole model saved with torch.save(model)); "
                "they are not loaded because unpickling can run code. Re-save it as a state dict: "
                "torch.save(model.state_dict(), path)"
            ) from None
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({_first_line(error)})") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as error:
        # miniz's message goes on with a paragraph of advice: its first sentence says what is wrong.
        raise UserError(
            f"{path}: not a readable PyTorch checkpoint, truncated or corrupt ({_first_line(error).split('. ')[0]})"
        ) from None


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def save_checkpoint(path: str, checkpoint: dict, keep: int = 1) -> None:
    """Write ``checkpoint`` with every tensor in it contiguous, atomically and durably: a crash or
    kill mid-write leaves the previous file intact.

    keep: how many checkpoints written to ``path`` stay on disk: the new one and the ``keep - 1``
    before it, as ``previous_checkpoint_paths(path)``, so one corrupted file costs one interval.
    A failed write (disk full, quota) is a ``UserError`` naming the folder; nothing of it remains.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        with atomic_path(path, durable=True) as tmp:
            # Through a Python file: a failed write is then an OSError with its errno (torch's own
            # writer of a path reports it as a RuntimeError with no cause: "unexpected pos ...").
            with open(tmp, "wb") as handle:
                torch.save(contiguous_tensors(checkpoint), handle)
            _rotate_previous(path, keep)
    except (OSError, RuntimeError) as error:
        # torch's zip writer turns the file's OSError into a RuntimeError raised while closing.
        write_error = _os_error_in_chain(error)
        if write_error is None:
            raise
        reason = write_error.strerror or _first_line(write_error)
        kept = f"the previous {path} is intact" if os.path.exists(path) else f"no {os.path.basename(path)} yet"
        raise UserError(f"cannot save checkpoint {path} in {folder}: {reason} ({_free_space(folder)} free); "
                        f"{kept}, no partial file left; free space there or choose another --output_dir"
                        ) from None


def _os_error_in_chain(error: BaseException) -> Optional[OSError]:
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def previous_checkpoint_paths(path: str, count: int) -> List[str]:
    """The names the ``count`` checkpoints before ``path`` keep: last.prev.pt, last.prev2.pt, ..."""
    stem, extension = os.path.splitext(path)
    return [f"{stem}.prev{'' if k == 1 else k}{extension}" for k in range(1, count + 1)]


def _rotate_previous(path: str, keep: int) -> None:
    """Shift the kept previous checkpoints one place and make ``path`` the newest of them.

    Each step is one rename, and ``path`` itself is hard-linked rather than moved, so that at
    every moment ``path`` exists.
    """
    previous = previous_checkpoint_paths(path, keep - 1)
    if not previous or not os.path.exists(path):
        return
    for older, newer in zip(previous[::-1][:-1], previous[::-1][1:]):
        if os.path.exists(newer):
            os.replace(newer, older)
    with atomic_path(previous[0]) as link:
        os.unlink(link)
        try:
            os.link(path, link)
        except OSError:  # a file system without hard links
            shutil.copyfile(path, link)


def _free_space(folder: str) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2 ** 20:.0f} MiB"
    except OSError:
        return "unknown space"


def contiguous_tensors(obj):
    """``obj`` with every tensor inside its dicts, lists and tuples made contiguous (others as they are).

    ``.contiguous()`` returns an already contiguous tensor itself, so only channels-last ones are copied.
    """
    if isinstance(obj, torch.Tensor):
        return obj.contiguous()
    if isinstance(obj, dict):
        copy = type(obj)((key, contiguous_tensors(value)) for key, value in obj.items())
        if hasattr(obj, "_metadata"):  # a module state dict's per-module versions, read by load_state_dict
            copy._metadata = obj._metadata
        return copy
    if isinstance(obj, list):
        return [contiguous_tensors(value) for value in obj]
    if isinstance(obj, tuple):
        return tuple(contiguous_tensors(value) for value in obj)
    return obj


def load_optimizer_state(optimizer: torch.optim.Optimizer, state_dict: dict) -> None:
    """``optimizer.load_state_dict``, then each per-parameter state tensor laid out like its parameter.

    Checkpoints hold contiguous tensors while the model trains in channels-last. The fused Adam
    and SGD kernels walk a parameter and its state as flat memory: a moment left contiguous beside
    a channels-last weight is paired with the wrong elements, and on the CPU the resumed run
    silently diverges from the uninterrupted one.
    """
    optimizer.load_state_dict(state_dict)
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DataParallel / DistributedDataParallel, so saved keys have no ``module.`` prefix."""
    return model.module if hasattr(model, "module") else model


def split_checkpoint(obj, path: str) -> Tuple[Dict[str, torch.Tensor], Optional[List[str]], Optional[dict]]:
    """(state_dict with the pytorch-retinanet key layout, class names or None, model args or None)."""
    class_names = model_args = None
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        state_dict, class_names, model_args = obj["model"], obj.get("class_names"), obj.get("model_args")
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        state_dict = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        state_dict = obj["model"]
    else:
        state_dict = obj
    if not isinstance(state_dict, dict) or not state_dict or not all(
        isinstance(v, torch.Tensor) for v in state_dict.values()
    ):
        raise UserError(
            f"{path}: not a model checkpoint (expected a state dict of tensors, found {type(obj).__name__})"
        )
    if all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict), class_names, model_args


def infer_model_args(state_dict: Dict[str, torch.Tensor], path: str) -> Dict[str, int]:
    """Depth, class count and feature size read off the tensors themselves."""
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
    num_anchors = state_dict["regressionModel.output.bias"].shape[0] // 4
    return {
        "depth": depth,
        "num_classes": num_anchor_outputs // num_anchors,
        "feature_size": state_dict["fpn.P5_1.weight"].shape[0],
    }


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
    if mapping != list(range(found["num_classes"])) or not same_classes:
        initial = {key: expected[key] for key in CLASS_HEAD_KEYS}
        state_dict = remap_class_head(state_dict, mapping, initial, model.anchor_generator.num_anchors_per_location)

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
