"""Data-loading speed: decode -> network-ready tensor for 1280x720 JPEGs, and CrowdHuman conversion.

Usage:
    python benchmarks/bench_data.py
    python benchmarks/bench_data.py --num_images 30 --rounds 5 --conversion_images 0

Times this project's pipeline (OpenCV decode, uint8 resize, look-up-table normalisation)
against a baseline written here in the style of the original project (scikit-image decode,
float64 scikit-image resize, normalise, pad by 32 more pixels), prints a table with the
ratio, and writes benchmarks/results/bench_data.json. The second part converts a CrowdHuman-
sized odgt (15,000 images, ~440k boxes by default) to CSV and JSON and times it.
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time

import cv2
import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from retinanet.cli import run_cli  # noqa: E402
from retinanet.data import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    CSVDataset,
    Transform,
    read_image,
    resize_scale,
)
from retinanet.data.crowdhuman import CROWDHUMAN_CLASSES, convert_split  # noqa: E402
from retinanet.io_utils import write_json  # noqa: E402
from tools.annotation_writers import write_split  # noqa: E402
from tools.synthetic_crowdhuman import SyntheticConfig, generate_image  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bench_data.json")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num_images", type=int, default=20,
                        help="distinct JPEGs timed (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the images (default: %(default)s)")
    parser.add_argument("--width", type=int, default=1280, help="JPEG width (default: %(default)s)")
    parser.add_argument("--height", type=int, default=720, help="JPEG height (default: %(default)s)")
    parser.add_argument("--min_side", type=int, default=608, help="resize short side (default: %(default)s)")
    parser.add_argument("--max_side", type=int, default=1024,
                        help="resize long-side cap (default: %(default)s)")
    parser.add_argument("--conversion_images", type=int, default=15000,
                        help="images in the conversion benchmark, 0 to skip it (default: %(default)s)")
    parser.add_argument("--people_per_image", type=int, default=15,
                        help="people per image in the conversion benchmark; each gives a body and a head "
                             "box (default: %(default)s, 450k boxes for 15,000 images)")
    parser.add_argument("--output", default=RESULTS, help="JSON results file (default: %(default)s)")
    return parser


def original_style_pipeline(path: str, min_side: int, max_side: int) -> torch.Tensor:
    """The original project's steps: skimage decode, float, normalise, float64 resize, pad +32."""
    import skimage.io
    import skimage.transform

    image = skimage.io.imread(path).astype(np.float32) / 255.0
    image = (image - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    rows, cols = image.shape[:2]
    scale = resize_scale(rows, cols, min_side, max_side)
    image = skimage.transform.resize(image, (int(round(rows * scale)), int(round(cols * scale))))
    rows, cols = image.shape[:2]
    # the original always pads by up to 32 more pixels, even when already aligned
    padded = np.zeros((rows + 32 - rows % 32, cols + 32 - cols % 32, 3), np.float32)
    padded[:rows, :cols] = image
    return torch.from_numpy(padded).permute(2, 0, 1)


def this_pipeline(path: str, transform: Transform) -> torch.Tensor:
    return transform(read_image(path))[0]


def _time_per_image(function, paths: "list[str]", rounds: int, label: str) -> "dict[str, float]":
    function(paths[0])  # warm-up: lazy imports, thread pools
    times = []
    for _ in tqdm(range(rounds), desc=label, leave=False):
        for path in paths:
            start = time.perf_counter()
            function(path)
            times.append(time.perf_counter() - start)
    times_ms = np.array(times) * 1000
    return {"median_ms": float(np.median(times_ms)), "mean_ms": float(times_ms.mean()),
            "p90_ms": float(np.percentile(times_ms, 90))}


def _stage_times(paths: "list[str]", transform: Transform) -> "dict[str, float]":
    """Median ms of decode and of resize+normalise, measured apart."""
    decode, rest = [], []
    for path in paths:
        start = time.perf_counter()
        image = read_image(path)
        middle = time.perf_counter()
        transform(image)
        decode.append(middle - start)
        rest.append(time.perf_counter() - middle)
    return {"decode_ms": float(np.median(decode) * 1000),
            "resize_normalise_ms": float(np.median(rest) * 1000)}


def _write_jpegs(folder: str, count: int, width: int, height: int) -> "list[str]":
    config = SyntheticConfig(width=width, height=height, min_head=height // 12, max_head=height // 5)
    paths = []
    for index in range(count):
        image, _ = generate_image(np.random.default_rng(index), config)
        path = os.path.join(folder, f"{index}.jpg")
        cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def bench_pipeline(args, folder: str) -> dict:
    paths = _write_jpegs(folder, args.num_images, args.width, args.height)
    transform = Transform(args.min_side, args.max_side)
    default_threads = cv2.getNumThreads()
    results = {"ours": _time_per_image(lambda p: this_pipeline(p, transform), paths, args.rounds, "ours")}
    results["ours"].update(_stage_times(paths, transform))
    # One OpenCV thread is what each DataLoader worker should use when several run side by side.
    cv2.setNumThreads(1)
    results["ours_1_thread"] = _time_per_image(
        lambda p: this_pipeline(p, transform), paths, args.rounds, "ours, 1 thread")
    cv2.setNumThreads(default_threads)
    original = lambda p: original_style_pipeline(p, args.min_side, args.max_side)
    results["original_style"] = _time_per_image(original, paths, args.rounds, "original style")
    results["speedup"] = results["original_style"]["median_ms"] / results["ours"]["median_ms"]
    results["opencv_threads"] = default_threads
    return results


def bench_conversion(args, folder: str) -> dict:
    """Convert a CrowdHuman-sized odgt whose images are copies of one small JPEG."""
    data_dir = os.path.join(folder, "CrowdHuman")
    _, encoded = cv2.imencode(".jpg", np.zeros((360, 640, 3), np.uint8))
    rng = np.random.default_rng(0)
    records = []
    for index in tqdm(range(args.conversion_images), desc="writing images", leave=False):
        image_id = f"273271,{index:016x}"
        folder_name = f"CrowdHuman_train0{1 + index * 3 // args.conversion_images}"
        images_dir = os.path.join(data_dir, folder_name, "Images")
        os.makedirs(images_dir, exist_ok=True)
        with open(os.path.join(images_dir, f"{image_id}.jpg"), "wb") as handle:
            handle.write(encoded.tobytes())
        xy = rng.integers(-50, 600, (args.people_per_image, 2)).tolist()
        records.append(json.dumps({"ID": image_id, "gtboxes": [
            {"tag": "person", "hbox": [x + 10, y, 20, 25], "head_attr": {"ignore": 0, "occ": 0, "unsure": 0},
             "fbox": [x, y, 60, 180], "vbox": [x, y, 60, 120], "extra": {"box_id": k, "occ": 0}}
            for k, (x, y) in enumerate(xy)
        ]}))
    with open(os.path.join(data_dir, "annotation_train.odgt"), "w") as handle:
        handle.write("\n".join(records) + "\n")
    start = time.perf_counter()
    split = convert_split(data_dir, "train", list(CROWDHUMAN_CLASSES))
    write_split(data_dir, "train", split)
    converted = time.perf_counter()
    # What training start-up then costs: parsing the CSV and checking every image exists.
    CSVDataset(os.path.join(data_dir, "train_annotations.csv"), list(CROWDHUMAN_CLASSES))
    loaded = time.perf_counter()
    return {"images": len(split.image_ids), "boxes_in": 2 * args.people_per_image * args.conversion_images,
            "boxes_out": int(len(split.boxes)), "convert_seconds": converted - start,
            "csv_dataset_seconds": loaded - converted}


def main(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        pipeline = bench_pipeline(args, folder)
        conversion = bench_conversion(args, folder) if args.conversion_images > 0 else None
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
               "opencv": cv2.__version__}
    size = f"{args.width}x{args.height} JPEG -> ({args.min_side}, {args.max_side}) tensor"
    print(f"\ndecode -> network-ready tensor, {size}, ms per image ({os.cpu_count()} CPUs)")
    print(f"{'pipeline':<34}{'median':>9}{'mean':>9}{'p90':>9}")
    for key, name in (("ours", f"opencv + LUT ({pipeline['opencv_threads']} cv2 threads)"),
                      ("ours_1_thread", "opencv + LUT (1 cv2 thread)"),
                      ("original_style", "skimage float64 (original style)")):
        row = pipeline[key]
        print(f"{name:<34}{row['median_ms']:>9.2f}{row['mean_ms']:>9.2f}{row['p90_ms']:>9.2f}")
    print(f"of which decode {pipeline['ours']['decode_ms']:.2f} ms, resize + normalise "
          f"{pipeline['ours']['resize_normalise_ms']:.2f} ms; speed-up over original style "
          f"{pipeline['speedup']:.1f}x")
    if conversion:
        print(f"\nCrowdHuman conversion: {conversion['images']} images, {conversion['boxes_in']} boxes in, "
              f"{conversion['boxes_out']} out after clipping: {conversion['convert_seconds']:.2f} s; "
              f"loading the CSV in CSVDataset: {conversion['csv_dataset_seconds']:.2f} s")
    results = {"machine": machine, "args": vars(args), "pipeline": pipeline, "conversion": conversion}
    write_json(args.output, results)
    print(f"wrote {args.output}")
    return results


if __name__ == "__main__":
    run_cli(main, get_args_parser())
