"""The loops every script shares: one training epoch, and batched inference over a data loader."""
import math
import time
import warnings
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import torch
from tqdm import tqdm

from retinanet.distributed import DistributedContext, all_reduce_mean, all_true
from retinanet.errors import UserError, user_message
from retinanet.precision import FP32, Precision


class NonFiniteLossError(UserError):
    """Too many non-finite losses in a row: the run stops, the last good checkpoint is kept."""


class BatchLoadError(UserError):
    """A batch could not be loaded (an image deleted or damaged after start-up); raised on every
    process at the same step. ``batches``: batches of the epoch consumed before it."""

    def __init__(self, message: str, batches: int):
        super().__init__(message)
        self.batches = batches


def _next_batch(batches: Iterator) -> Tuple[Optional[tuple], Optional[str]]:
    """(batch, None), (None, the loader's one-line error), or (None, None) at the end of the epoch."""
    try:
        return next(batches), None
    except StopIteration:
        return None, None
    except UserError as error:  # the dataset's own message, e.g. "path.jpg: cannot read image"
        return None, user_message(error)


def train_one_epoch(
    model: torch.nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: "torch.amp.GradScaler",
    device: torch.device,
    context: DistributedContext,
    precision: Precision = FP32,
    clip_grad_norm: float = 0.0,
    max_nonfinite_steps: int = 5,
    on_step: Optional[Callable[[dict], bool]] = None,
    description: str = "train",
    epoch_sums: Optional[Dict[str, float]] = None,
) -> Dict[str, float]:
    """One pass over ``loader``; returns mean losses, steps, skipped steps, batches consumed and images/s.

    epoch_sums: {"classification", "regression", "steps"} running sums of the epoch's step losses,
    updated in place; an epoch resumed mid-way passes the sums saved with its checkpoint, so the
    mean losses returned cover all of the epoch's steps, before and after the resume.

    A step whose loss is not finite on any process is skipped on all of them (with a warning
    naming each loss term and the batch's images); ``max_nonfinite_steps`` in a row raise
    ``NonFiniteLossError``. A batch the loader cannot load raises ``BatchLoadError`` on every
    process, with the model as it was after the last step. ``on_step(record)`` is called after
    each step with its losses and returns True to stop the epoch early (Ctrl-C / SIGTERM).
    """
    model.train()
    totals = epoch_sums if epoch_sums is not None else {}
    for key in ("classification", "regression", "steps"):
        totals.setdefault(key, 0)
    steps = skipped = bad_in_a_row = images_seen = 0
    start = time.perf_counter()
    bar = tqdm(loader, desc=description, unit="batch", disable=not context.is_main, dynamic_ncols=True)
    batches = iter(bar)
    while True:
        batch, load_error = _next_batch(batches)
        # Every process holds the same number of batches; one that cannot load its batch stops them all here.
        if not all_true(load_error is None, device, context):
            bar.close()
            raise BatchLoadError(load_error or "another process could not load its batch", steps + skipped)
        if batch is None:
            break
        images, targets, metas = batch
        images = images.to(device, non_blocking=True)
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        with precision.autocast(device):
            losses = model(images, targets)
        loss = losses["classification"] + losses["regression"]
        terms = torch.stack([losses["classification"].detach(), losses["regression"].detach()])

        if not all_true(bool(torch.isfinite(terms).all()), device, context):
            skipped += 1
            bad_in_a_row += 1
            optimizer.zero_grad(set_to_none=True)
            names = ", ".join(str(m["path"]) for m in metas)
            message = (f"non-finite loss skipped (classification={terms[0].item():.4g}, "
                       f"regression={terms[1].item():.4g}) on images: {names}")
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            if bad_in_a_row >= max_nonfinite_steps:
                raise NonFiniteLossError(
                    f"{bad_in_a_row} non-finite losses in a row; stopping (last: {message}); "
                    "the last saved checkpoint is intact — lower --lr or check the data"
                )
            continue
        bad_in_a_row = 0

        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if clip_grad_norm > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()

        terms = all_reduce_mean(terms, context)
        steps += 1
        images_seen += images.shape[0] * context.world_size
        classification, regression = terms.tolist()
        totals["classification"] += classification
        totals["regression"] += regression
        totals["steps"] += 1
        elapsed = time.perf_counter() - start
        lr = optimizer.param_groups[0]["lr"]
        bar.set_postfix(cls=f"{classification:.4f}", reg=f"{regression:.4f}", lr=f"{lr:.2e}",
                        img_s=f"{images_seen / elapsed:.1f}")
        record = {"classification": classification, "regression": regression, "lr": lr,
                  "batches": steps + skipped}
        if on_step is not None and on_step(record):
            break
    bar.close()
    elapsed = time.perf_counter() - start
    result = {key: totals[key] / totals["steps"] if totals["steps"] else math.nan
              for key in ("classification", "regression")}
    result.update(loss=result["classification"] + result["regression"], steps=steps, skipped=skipped,
                  batches=steps + skipped, images_per_second=images_seen / elapsed if elapsed else 0.0)
    return result


@torch.inference_mode()
def run_inference(
    model: torch.nn.Module,
    loader: Iterable,
    device: torch.device,
    num_images: Optional[int] = None,
    precision: Precision = FP32,
    description: str = "inference",
    progress: bool = True,
    on_image: Optional[Callable[[int, dict], dict]] = None,
) -> Dict[str, object]:
    """Detections for every image a loader yields, in original image coordinates.

    on_image(index, detections): called for each image as soon as its batch is done, in loader
    order; what it returns is kept in place of the detections (a caller can keep a selection, or
    start writing its output while the next batches run).

    loader yields ``(images (B, 3, H, W), targets, metas)`` as ``retinanet.data.collate_batch`` makes
    them; each meta has ``index``, ``scale``, ``orig_size`` and ``image_size``. Returns {"detections": list indexed
    by ``meta["index"]`` of {"boxes": (D, 4) float32, "scores": (D,), "labels": (D,) int64} numpy
    arrays (a person-triplet model's also "visible_boxes" and "head_boxes"), "images_per_second": float}.
    """
    model.eval()
    detections: List[Optional[dict]] = [None] * num_images if num_images is not None else []
    count, start = 0, time.perf_counter()
    for images, _, metas in tqdm(loader, desc=description, unit="batch", disable=not progress, dynamic_ncols=True):
        images = images.to(device, non_blocking=True)
        # Clip to each image's own (unpadded) extent, then return to its original pixel grid.
        with precision.autocast(device):
            outputs = model(images, image_sizes=[m["image_size"] for m in metas],
                            image_scales=[m["scale"] for m in metas])
        for meta, output in zip(metas, outputs):
            height, width = meta["orig_size"]
            result = {}
            # "boxes", and a person-triplet model's "visible_boxes" and "head_boxes"
            for key in (key for key in output if key.endswith("boxes")):
                boxes = output[key].float().cpu().numpy()
                np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
                np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
                result[key] = boxes
            result.update(scores=output["scores"].float().cpu().numpy(),
                          labels=output["labels"].cpu().numpy().astype(np.int64))
            index = meta["index"]
            if on_image is not None:
                result = on_image(index, result)
            if index >= len(detections):
                detections.extend([None] * (index + 1 - len(detections)))
            detections[index] = result
        count += len(metas)
    elapsed = time.perf_counter() - start
    empty = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32), "labels": np.zeros(0, np.int64)}
    example = next((d for d in detections if d is not None), {})
    empty.update({key: np.zeros((0, 4), np.float32) for key in example if key.endswith("boxes")})
    detections = [d if d is not None else dict(empty) for d in detections]
    return {"detections": detections, "images_per_second": count / elapsed if elapsed > 0 else 0.0}
