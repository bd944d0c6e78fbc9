"""Start-up cost of large annotation files: CSV, YOLO-style COCO and official COCO JSON.

Usage:
    python benchmarks/bench_startup.py
    python benchmarks/bench_startup.py --num_images 2000 --num_boxes 45000

Writes a CrowdHuman-sized set (15,000 tiny real JPEGs, 340,000 boxes by default) in three
annotation layouts into a temporary folder and times building each dataset (parsing every row,
checking every image, reading every image size from its header) and then the aspect-ratio batch
sampler training builds on it. The files were just written, so the disk cache is warm; a cold
disk adds the time to read one block per image. Writes benchmarks/results/bench_startup.json.
"""
import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from retinanet.cli import run_cli  # noqa: E402
from retinanet.coco_names import COCO_CATEGORY_IDS, COCO_CLASS_NAMES  # noqa: E402
from retinanet.data import AspectRatioBatchSampler, CocoDataset, CSVDataset  # noqa: E402
from retinanet.io_utils import write_json  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bench_startup.json")
# (H, W) of the generated images: landscape, portrait and square, so aspect ratios differ.
IMAGE_SIZES = ((48, 64), (64, 48), (56, 56))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=15000, help="images (default: %(default)s)")
    parser.add_argument("--num_boxes", type=int, default=340000, help="boxes in all (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the boxes (default: %(default)s)")
    parser.add_argument("--output", default=RESULTS, help="JSON results file (default: %(default)s)")
    return parser


def _write_images(folder: str, names: "list[str]", sizes: np.ndarray) -> None:
    os.makedirs(folder, exist_ok=True)
    encoded = [cv2.imencode(".jpg", np.full((h, w, 3), 128, np.uint8))[1].tobytes() for h, w in IMAGE_SIZES]
    for name, kind in zip(names, sizes):
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(encoded[kind])


def _random_boxes(rng, args, kinds: np.ndarray) -> "tuple[np.ndarray, np.ndarray]":
    """(B,) image index of each box, sorted; (B, 4) x1y1x2y2 pixels inside its image."""
    box_images = np.sort(rng.integers(0, args.num_images, args.num_boxes))
    heights, widths = np.array(IMAGE_SIZES, np.float64)[kinds[box_images]].T
    x1, y1 = rng.uniform(0, widths - 8), rng.uniform(0, heights - 8)
    x2, y2 = rng.uniform(x1 + 2, widths), rng.uniform(y1 + 2, heights)
    return box_images, np.round(np.stack([x1, y1, x2, y2], axis=1), 1)


def _time(function) -> "tuple[object, float, float]":
    """(result, wall seconds, CPU seconds of this process): on a busy machine the CPU time is the steadier."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _time_start_up(build) -> dict:
    dataset, build_seconds, build_cpu = _time(build)
    _, sampler_seconds, sampler_cpu = _time(lambda: AspectRatioBatchSampler(dataset, batch_size=4))
    boxes = sum(len(dataset.annotations(index)["boxes"]) for index in range(len(dataset)))
    return {"images": len(dataset), "boxes": boxes, "dataset_seconds": build_seconds,
            "dataset_cpu_seconds": build_cpu, "sampler_seconds": sampler_seconds,
            "sampler_cpu_seconds": sampler_cpu}


def bench_csv(folder: str, args, box_images, boxes, kinds) -> dict:
    """CrowdHuman-style names (with a comma, so quoted), person/head boxes, 2% ignore regions."""
    names = [f"273271,{index:016x}.jpg" for index in range(args.num_images)]
    _write_images(os.path.join(folder, "Images"), names, kinds)
    rng = np.random.default_rng(args.seed + 1)
    classes = np.array(["person", "head", "__ignore__"])[rng.choice(3, len(boxes), p=[0.49, 0.49, 0.02])]
    path = os.path.join(folder, "train.csv")
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        for image, box, name in zip(box_images.tolist(), boxes.tolist(), classes.tolist()):
            writer.writerow([f"Images/{names[image]}", *box, name])
        writer.writerows([f"Images/{names[image]}", "", "", "", "", ""]
                         for image in np.setdiff1d(np.arange(args.num_images), box_images).tolist())
    return _time_start_up(lambda: CSVDataset(path, ["person", "head"]))


def bench_yolo(folder: str, args, box_images, boxes, kinds) -> dict:
    root = os.path.join(folder, "yolo")
    names = [f"{index + 1:012d}.jpg" for index in range(args.num_images)]
    _write_images(os.path.join(root, "images", "train2017"), names, kinds)
    os.makedirs(os.path.join(root, "labels", "train2017"))
    sizes = np.array(IMAGE_SIZES, np.float64)[kinds]
    labels = np.random.default_rng(args.seed + 2).integers(0, len(COCO_CLASS_NAMES), len(boxes))
    starts = np.searchsorted(box_images, np.arange(args.num_images + 1))
    for index, name in enumerate(names):
        rows = slice(starts[index], starts[index + 1])
        if rows.start == rows.stop:
            continue
        height, width = sizes[index]
        x1, y1, x2, y2 = boxes[rows].T
        with open(os.path.join(root, "labels", "train2017", name.replace(".jpg", ".txt")), "w") as handle:
            handle.writelines(
                f"{label} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n"
                for label, cx, cy, w, h in zip(labels[rows], (x1 + x2) / 2 / width, (y1 + y2) / 2 / height,
                                               (x2 - x1) / width, (y2 - y1) / height)
            )
    with open(os.path.join(root, "train2017.txt"), "w") as handle:
        handle.writelines(f"./images/train2017/{name}\n" for name in names)
    return _time_start_up(lambda: CocoDataset(root, "train2017"))


def bench_official(folder: str, args, box_images, boxes, kinds) -> dict:
    root = os.path.join(folder, "official")
    names = [f"{index + 1:012d}.jpg" for index in range(args.num_images)]
    _write_images(os.path.join(root, "images", "train2017"), names, kinds)
    sizes = np.array(IMAGE_SIZES)[kinds].tolist()
    labels = np.random.default_rng(args.seed + 2).integers(0, len(COCO_CLASS_NAMES), len(boxes))
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    data = {
        "images": [{"id": index + 1, "file_name": name, "height": h, "width": w}
                   for index, (name, (h, w)) in enumerate(zip(names, sizes))],
        "annotations": [{"id": n + 1, "image_id": image + 1, "category_id": COCO_CATEGORY_IDS[label],
                         "bbox": box, "area": box[2] * box[3], "iscrowd": 0}
                        for n, (image, label, box) in enumerate(zip(box_images.tolist(), labels.tolist(),
                                                                    xywh.tolist()))],
        "categories": [{"id": i, "name": name} for i, name in zip(COCO_CATEGORY_IDS, COCO_CLASS_NAMES)],
    }
    os.makedirs(os.path.join(root, "annotations"))
    with open(os.path.join(root, "annotations", "instances_train2017.json"), "w") as handle:
        json.dump(data, handle)
    return _time_start_up(lambda: CocoDataset(root, "train2017"))


def main(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    kinds = rng.integers(0, len(IMAGE_SIZES), args.num_images)  # (I,) index into IMAGE_SIZES
    box_images, boxes = _random_boxes(rng, args, kinds)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, bench in (("csv", bench_csv), ("coco_yolo_style", bench_yolo), ("coco_official", bench_official)):
            results[name] = bench(folder, args, box_images, boxes, kinds)
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "python": platform.python_version(), "opencv": cv2.__version__}
    print(f"\nstart-up, {args.num_images} images, {args.num_boxes} boxes (warm disk cache), seconds wall (CPU)")
    print(f"{'layout':<18}{'dataset':>15}{'sampler':>15}{'images':>9}{'boxes':>9}")
    for name, row in results.items():
        print(f"{name:<18}{row['dataset_seconds']:>8.2f} ({row['dataset_cpu_seconds']:.2f})"
              f"{row['sampler_seconds']:>8.3f} ({row['sampler_cpu_seconds']:.3f})"
              f"{row['images']:>9}{row['boxes']:>9}")
    document = {"machine": machine, "args": vars(args), "results": results}
    write_json(args.output, document)
    print(f"wrote {args.output}")
    return document


if __name__ == "__main__":
    run_cli(main, get_args_parser())
