"""Checkpoint files: safe reading, durable writing, and what kind of checkpoint a file holds.

Read: ours, bare state dicts, DataParallel/DDP ones, pre-0.4.1 ones. What the weights describe
and how they go into a model (architecture, class rows) is ``retinanet.state_dicts``.

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
from typing import Dict, List, Optional, Tuple

import torch

from retinanet.errors import UserError
from retinanet.io_utils import atomic_path

CHECKPOINT_FORMAT = "retinanet-checkpoint/1"


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
