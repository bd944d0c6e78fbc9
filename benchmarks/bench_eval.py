"""Time the evaluation metrics on synthetic detections: VOC mAP, the CrowdHuman protocol, COCO.

Usage:
    python benchmarks/bench_eval.py                       # 5,000 images x 2 classes x ~20 GT / ~100 dets
    python benchmarks/bench_eval.py --images 200 --coco both

The data are seeded: per image and class about ``--gt_per_class`` ground-truth boxes
(some running off the image), twice as many jittered copies of them as detections
(true positives and duplicates) topped up with random boxes to ``--dets_per_class``,
and 0-3 ignore regions (for one class or for all). Prints a table and writes
``benchmarks/results/bench_eval.json``.
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retinanet.cli import run_cli  # noqa: E402
from retinanet.errors import UserError  # noqa: E402
from retinanet.evaluation import (  # noqa: E402
    detections_to_coco_results,
    evaluate_coco,
    evaluate_crowdhuman,
    evaluate_voc,
)
from retinanet.io_utils import write_json  # noqa: E402

TARGETS_S = {"voc_map": 5.0, "crowdhuman_both_classes": 30.0}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="number of synthetic images (default 5000)")
    parser.add_argument("--classes", type=int, default=2, help="number of classes (default 2)")
    parser.add_argument("--gt_per_class", type=int, default=20, help="mean GT boxes per image and class")
    parser.add_argument("--dets_per_class", type=int, default=100, help="detections per image and class")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the synthetic data")
    parser.add_argument(
        "--coco",
        choices=("none", "faster", "both"),
        default="faster",
        help="COCO evaluation to time: none, faster-coco-eval only, or also pycocotools (slow: minutes)",
    )
    parser.add_argument(
        "--output",
        default=str(Path(__file__).resolve().parent / "results" / "bench_eval.json"),
        help="where to write the JSON results (default benchmarks/results/bench_eval.json)",
    )
    return parser


def synthetic_data(args, rng):
    """Per image: detections dict, ground-truth dict and (H, W), as the evaluation functions take them."""
    detections, ground_truths, sizes = [], [], []
    for _ in tqdm(range(args.images), desc="synthetic data", unit="img"):
        height, width = int(rng.integers(600, 1200)), int(rng.integers(800, 1600))
        num_gt = rng.poisson(args.gt_per_class, size=args.classes)
        gt_labels = np.repeat(np.arange(args.classes), num_gt)
        sides = rng.uniform(20, 250, size=(len(gt_labels), 1)) * np.array([[0.5, 1.0]])
        corners = rng.uniform(-40, 1, size=(len(gt_labels), 2)) + rng.uniform(0, 1, (len(gt_labels), 2)) * [
            width,
            height,
        ]
        gt_boxes = np.hstack([corners, corners + sides])
        copies = np.repeat(gt_boxes, 2, axis=0)
        copies += rng.normal(0, 0.08, size=copies.shape) * np.repeat(sides, 2, axis=0)[:, [0, 1, 0, 1]]
        copy_labels = np.repeat(gt_labels, 2)
        extra = np.maximum(args.dets_per_class - np.bincount(copy_labels, minlength=args.classes), 0)
        extra_labels = np.repeat(np.arange(args.classes), extra)
        extra_xy = rng.uniform(0, 1, size=(len(extra_labels), 2)) * [width, height]
        extra_boxes = np.hstack([extra_xy, extra_xy + rng.uniform(10, 200, size=(len(extra_labels), 2))])
        boxes = np.vstack([copies, extra_boxes])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        scores = np.concatenate([rng.beta(5, 2, size=len(copies)), rng.beta(1, 5, size=len(extra_boxes))])
        num_ignore = int(rng.integers(0, 4))
        ignore_xy = rng.uniform(0, 1, size=(num_ignore, 2)) * [width, height]
        ignore = np.hstack([ignore_xy, ignore_xy + rng.uniform(50, 300, size=(num_ignore, 2))])
        detections.append(
            {
                "boxes": boxes.astype(np.float32),
                "scores": scores.astype(np.float32),
                "labels": np.concatenate([copy_labels, extra_labels]),
            }
        )
        ground_truths.append(
            {
                "boxes": gt_boxes.astype(np.float32),
                "labels": gt_labels,
                "ignore": ignore.astype(np.float32),
                "ignore_labels": rng.integers(-1, args.classes, size=num_ignore),
            }
        )
        sizes.append((height, width))
    return detections, ground_truths, sizes


def coco_ground_truth(ground_truths, sizes, num_classes) -> dict:
    """The same data as a COCO annotation dict; ignore regions become iscrowd boxes of their class(es)."""
    images, annotations = [], []
    for image_id, (gt, (height, width)) in enumerate(zip(ground_truths, sizes)):
        images.append({"id": image_id, "height": height, "width": width})
        crowd_labels = [
            list(range(num_classes)) if label < 0 else [int(label)] for label in gt["ignore_labels"]
        ]
        entries = [(box, int(label), 0) for box, label in zip(gt["boxes"].tolist(), gt["labels"])]
        entries += [(box, c, 1) for box, labels in zip(gt["ignore"].tolist(), crowd_labels) for c in labels]
        for (x1, y1, x2, y2), label, crowd in entries:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": crowd,
                }
            )
    categories = [{"id": c + 1, "name": f"class{c}"} for c in range(num_classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def timed(function, *args, **kwargs):
    """(value, wall seconds, CPU seconds of this process); CPU time is what a busy machine distorts least."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - wall, time.process_time() - cpu


def _evaluate_crowdhuman_all(detections, ground_truths, sizes, num_classes):
    return [evaluate_crowdhuman(detections, ground_truths, c, sizes) for c in range(num_classes)]


def main(args: argparse.Namespace) -> dict:
    for flag in ("images", "classes", "gt_per_class", "dets_per_class"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be at least 1")
    rng = np.random.default_rng(args.seed)
    detections, ground_truths, sizes = synthetic_data(args, rng)
    num_detections = int(sum(len(d["scores"]) for d in detections))
    num_gt = int(sum(len(g["labels"]) for g in ground_truths))

    rows = []  # (name, wall seconds, CPU seconds, headline metric)
    voc, *seconds = timed(evaluate_voc, detections, ground_truths, args.classes)
    rows.append(("voc_map", *seconds, f"mAP {voc['map']:.4f}"))
    crowdhuman, *seconds = timed(evaluate_crowdhuman, detections, ground_truths, 0, sizes)
    rows.append(("crowdhuman_one_class", *seconds, _crowdhuman_text(crowdhuman)))
    _, *seconds = timed(_evaluate_crowdhuman_all, detections, ground_truths, sizes, args.classes)
    rows.append(("crowdhuman_both_classes", *seconds, f"{args.classes} classes"))
    if args.coco != "none":
        gt_dict = coco_ground_truth(ground_truths, sizes, args.classes)
        results = detections_to_coco_results(
            detections, list(range(len(detections))), list(range(1, args.classes + 1))
        )
        backends = ["faster"] + (["pycocotools"] if args.coco == "both" else [])
        for backend in tqdm(backends, desc="COCO backends", unit="backend"):
            coco, *seconds = timed(evaluate_coco, gt_dict, results, backend=backend)
            rows.append((f"coco_{backend}", *seconds, f"AP {coco['AP']:.4f}, AP50 {coco['AP50']:.4f}"))

    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(
        f"\n{args.images} images x {args.classes} classes: {num_gt} GT boxes, {num_detections} detections "
        f"({machine})"
    )
    print(f"{'what':<26} {'wall s':>8} {'CPU s':>8} {'target':>8}  result")
    for name, wall, cpu, text in rows:
        target = f"< {TARGETS_S[name]:g}" if name in TARGETS_S else ""
        print(f"{name:<26} {wall:8.2f} {cpu:8.2f} {target:>8}  {text}")
    report = {
        "machine": machine,
        "load_average_1min": os.getloadavg()[0],
        "numpy": np.__version__,
        "settings": vars(args),
        "num_gt_boxes": num_gt,
        "num_detections": num_detections,
        "wall_seconds": {name: round(wall, 3) for name, wall, _, _ in rows},
        "cpu_seconds": {name: round(cpu, 3) for name, _, cpu, _ in rows},
        "targets_s": TARGETS_S,
        "results": {name: text for name, _, _, text in rows},
    }
    write_json(args.output, report)
    print(f"wrote {args.output}")
    return report


def _crowdhuman_text(result: dict) -> str:
    return f"AP {result['ap']:.4f}, MR^-2 {result['mr']:.4f}, JI {result['ji']:.4f}"


if __name__ == "__main__":
    run_cli(main, get_args_parser())
