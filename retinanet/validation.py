"""Run a model over a dataset and score it: shared by train.py and the validation scripts."""
from typing import List, Sequence, Tuple

import torch

from retinanet.data import AspectRatioBatchSampler, collate_batch, init_loader_worker
from retinanet.engine import run_inference
from retinanet.evaluation import evaluate_voc, format_summary


def make_eval_loader(dataset, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    """Batches of similar aspect ratio in a fixed order, so padding wastes little compute."""
    sampler = AspectRatioBatchSampler(dataset, batch_size, shuffle=False)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_batch, num_workers=workers,
                                       worker_init_fn=init_loader_worker)


def predict_dataset(
    model, dataset, device: torch.device, batch_size: int = 4, workers: int = 2, amp: bool = False,
    description: str = "inference",
) -> Tuple[List[dict], float]:
    """(detections per dataset index in original coordinates, images per second)."""
    result = run_inference(model, make_eval_loader(dataset, batch_size, workers), device, num_images=len(dataset),
                           amp=amp, description=description)
    return result["detections"], result["images_per_second"]


def dataset_ground_truths(dataset) -> List[dict]:
    return [dataset.annotations(i) for i in range(len(dataset))]


def validate(
    model, dataset, device: torch.device, batch_size: int = 4, workers: int = 2, amp: bool = False,
    description: str = "validate", iou_threshold: float = 0.5, score_threshold: float = 0.05,
) -> dict:
    """VOC AP per class and mAP of ``model`` on ``dataset``; per_class keyed by class name."""
    detections, _ = predict_dataset(model, dataset, device, batch_size, workers, amp, description)
    result = evaluate_voc(detections, dataset_ground_truths(dataset), dataset.num_classes,
                          iou_threshold=iou_threshold, score_threshold=score_threshold)
    result["class_names"] = list(dataset.class_names)
    result["per_class"] = {dataset.class_names[k]: v for k, v in result["per_class"].items()}
    return result


def format_validation(result: dict) -> str:
    names: Sequence[str] = result["class_names"]
    by_index = dict(result, per_class={i: result["per_class"][name] for i, name in enumerate(names)})
    return format_summary(by_index, names)

