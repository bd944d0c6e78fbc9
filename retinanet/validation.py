"""Run a model over a dataset and score it: shared by train.py and the validation scripts.

The settings below say how a model is evaluated: train.py validates at them (the mAP that chooses
best.pt), and csv_validation.py runs and scores a checkpoint at the same settings by default, so the
two report the same numbers for the same checkpoint (tests/test_train.py checks it).
"""
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist

from retinanet.data import AspectRatioBatchSampler, make_loader
from retinanet.distributed import DistributedContext
from retinanet.engine import run_inference
from retinanet.evaluation import evaluate_voc, format_summary, voc_at_score_threshold
from retinanet.hub import inference_copy
from retinanet.model import DEFAULT_TOPK_PER_LEVEL
from retinanet.postprocess import CANDIDATES_PER_DETECTION
from retinanet.precision import FP32, Precision

# The model keeps detections scoring above this, at most EVAL_MAX_DETECTIONS per image: the
# CrowdHuman protocol scores detections down to 0.01, and its most crowded images hold a few
# hundred people and as many heads, so 1000 never cuts a detection that could match.
EVAL_SCORE_THRESHOLD = 0.01
EVAL_MAX_DETECTIONS = 1000

# VOC AP: a detection is a true positive at IoU >= VOC_IOU_THRESHOLD; AP is computed from every
# detection, precision and recall are reported at score >= VOC_SCORE_THRESHOLD.
VOC_IOU_THRESHOLD = 0.5
VOC_SCORE_THRESHOLD = 0.05


def evaluation_topk_per_level(max_detections: int) -> int:
    """Candidates each pyramid level passes to NMS when a model is evaluated at ``max_detections``.

    NMS looks at an image's best ``CANDIDATES_PER_DETECTION * max_detections`` candidates, and a level
    passes it no fewer. Cut to the model's 1000 (a speed setting, torchvision's), a crowded level is
    filled with the duplicates NMS removes and loses the people behind them: in the dense synthetic
    crowds of benchmarks/bench_crowd.py that cut cost every model 3 to 5 points of the recall of
    overlapped people and about 0.01 full-body AP; at this cap they are within 0.004 of no cut at all.
    """
    return max(DEFAULT_TOPK_PER_LEVEL, CANDIDATES_PER_DETECTION * max_detections)


def evaluation_settings(score_threshold: float = EVAL_SCORE_THRESHOLD,
                        max_detections: int = EVAL_MAX_DETECTIONS) -> dict:
    """The detection settings a model is evaluated at (``RetinaNet`` keyword arguments): train.py's
    validation at the defaults, csv/coco validation at their own threshold and detection cap."""
    return {"score_threshold": score_threshold, "max_detections": max_detections,
            "topk_per_level": evaluation_topk_per_level(max_detections)}


def make_eval_loader(
    dataset, batch_size: int, workers: int, context: Optional[DistributedContext] = None
) -> torch.utils.data.DataLoader:
    """Batches of similar aspect ratio in a fixed order, so padding wastes little compute.

    Under torchrun each process gets every world_size-th of those batches: the same batches, so the
    same padding and the same detections as one process, and no image twice.
    """
    context = context or DistributedContext()
    batches = list(AspectRatioBatchSampler(dataset, batch_size, shuffle=False))[context.rank::context.world_size]
    return make_loader(dataset, batch_sampler=batches, workers=workers)


def predict_dataset(
    model, dataset, device: torch.device, batch_size: int = 4, workers: int = 2, precision: Precision = FP32,
    description: str = "inference", context: Optional[DistributedContext] = None,
) -> Tuple[Optional[List[dict]], float]:
    """(detections per dataset index in original coordinates, images per second).

    Under torchrun every process runs ``model`` on its share of the batches and the first one
    gathers them: it gets the detections of the whole dataset, the others get None.
    """
    context = context or DistributedContext()
    start = time.perf_counter()
    loader = make_eval_loader(dataset, batch_size, workers, context)
    result = run_inference(model, loader, device, num_images=len(dataset), precision=precision, description=description,
                           progress=context.is_main)
    detections = result["detections"]
    if not context.enabled:
        return detections, result["images_per_second"]
    mine = [index for batch in loader.batch_sampler for index in batch]
    shares = [None] * context.world_size if context.is_main else None
    dist.gather_object([(index, detections[index]) for index in mine], shares, dst=0)
    if not context.is_main:
        return None, 0.0
    for share in shares:
        for index, image_detections in share:
            detections[index] = image_detections
    elapsed = time.perf_counter() - start
    return detections, len(dataset) / elapsed if elapsed > 0 else 0.0


def dataset_ground_truths(dataset) -> List[dict]:
    return [dataset.annotations(i) for i in range(len(dataset))]


def evaluation_model(model) -> torch.nn.Module:
    """``model`` copied as loaded from its checkpoint (``hub.inference_copy``), at the evaluation settings."""
    return inference_copy(model, **evaluation_settings())


def score_detections(detections: Sequence[dict], dataset, iou_threshold: float = VOC_IOU_THRESHOLD,
                     score_threshold: float = VOC_SCORE_THRESHOLD) -> dict:
    """VOC AP per class from every detection, precision and recall at ``score_threshold``, mAP:
    the VOC numbers csv_validation.py reports. per_class is keyed by class name.

    detections: per dataset index {boxes (D, 4) x1y1x2y2 original pixels, scores (D,), labels (D,)}.
    """

    every = evaluate_voc(detections, dataset_ground_truths(dataset), dataset.num_classes,
                         iou_threshold=iou_threshold, score_threshold=-np.inf)
    result = voc_at_score_threshold(every, score_threshold)
    result["class_names"] = list(dataset.class_names)
    result["per_class"] = {dataset.class_names[k]: v for k, v in result["per_class"].items()}
    return result


def validate(
    model, dataset, device: torch.device, batch_size: int = 4, workers: int = 2, precision: Precision = FP32,
    description: str = "validate", context: Optional[DistributedContext] = None,
) -> Optional[dict]:
    """``score_detections`` of ``model`` (a RetinaNet, not a DDP wrapper) on ``dataset``, run at the
    evaluation settings: what csv_validation.py reports for a checkpoint of ``model``.

    Under torchrun every process must call it; each infers its share, the first one scores the
    whole dataset and returns the result, the others return None.
    """
    copy = evaluation_model(model).to(device)
    detections, _ = predict_dataset(copy, dataset, device, batch_size, workers, precision, description, context)
    if detections is None:
        return None
    return score_detections(detections, dataset)


def format_validation(result: dict) -> str:
    names: Sequence[str] = result["class_names"]
    by_index = dict(result, per_class={i: result["per_class"][name] for i, name in enumerate(names)})
    return format_summary(by_index, names)
