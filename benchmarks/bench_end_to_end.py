"""Where the wall time of csv_validation.py and detect.py goes: the network, or everything around it.

Usage:
    python benchmarks/bench_end_to_end.py                     # 200 images, a 100-frame video, ResNet-50
    python benchmarks/bench_end_to_end.py --images 20 --frames 20 --depth 18      # a quick look

Both scripts run in this process, as a user runs them (their default flags: 2 loader workers, batch
4, short side 608, ``--precision auto``), on a checkpoint of a ResNet RetinaNet with random heads
whose scores spread over (0.1, 0.7), so that post-processing and scoring have hundreds of boxes
per image. ``RetinaNet.features`` and ``RetinaNet.head_outputs`` are wrapped to add up the time
spent in the network; the rest of the wall time is loading, post-processing, scoring and writing
that the scripts did not overlap with it. For detect.py the video's decoding and encoding are
also timed alone (OpenCV, the same frames and codec): a wall time near the largest of the three
rather than their sum means they overlap. Inputs are synthetic CrowdHuman-like pictures
(``tools/synthetic_crowdhuman.py``), 640x480. Writes benchmarks/results/bench_end_to_end.json.
"""
import argparse
import contextlib
import os
import platform
import sys
import tempfile
import time
from typing import Dict, List

# Run from a checkout without installing the package: make the repository root importable.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import csv_validation  # noqa: E402
import detect  # noqa: E402
from retinanet.checkpoint import CHECKPOINT_FORMAT  # noqa: E402
from retinanet.cli import run_cli  # noqa: E402
from retinanet.io_utils import write_json  # noqa: E402
from retinanet.model import RetinaNet, build_retinanet  # noqa: E402
from tests.helpers import randomise_heads  # noqa: E402
from tools.synthetic_crowdhuman import SyntheticConfig, generate_image  # noqa: E402

WIDTH, HEIGHT = 640, 480
CLASSES = ["person", "head"]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="images csv_validation.py scores (default 200)")
    parser.add_argument("--frames", type=int, default=100, help="frames of the video detect.py reads (default 100)")
    parser.add_argument("--depth", type=int, default=50, choices=[18, 34, 50, 101, 152], help="ResNet depth")
    parser.add_argument("--output", default=os.path.join(REPO_ROOT, "benchmarks", "results", "bench_end_to_end.json"),
                        help="JSON results (default benchmarks/results/bench_end_to_end.json)")
    return parser


@contextlib.contextmanager
def network_clock(totals: Dict[str, float]):
    """Inside the block every RetinaNet adds the seconds from the start of ``features`` to the end of
    ``head_outputs`` (its network) to ``totals["network"]``."""
    features, head_outputs = RetinaNet.features, RetinaNet.head_outputs
    started: List[float] = []

    def timed_features(self, images):
        started.append(time.perf_counter())
        return features(self, images)

    def timed_head_outputs(self, levels):
        outputs = head_outputs(self, levels)
        totals["network"] += time.perf_counter() - started.pop()
        return outputs

    RetinaNet.features, RetinaNet.head_outputs = timed_features, timed_head_outputs
    try:
        yield
    finally:
        RetinaNet.features, RetinaNet.head_outputs = features, head_outputs


def write_checkpoint(path: str, depth: int) -> None:
    torch.manual_seed(0)
    model = build_retinanet(len(CLASSES), depth)
    randomise_heads(model, class_bias=-1.0)
    torch.save({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "class_names": CLASSES,
                "model_args": model.model_args()}, path)


def write_images(folder: str, count: int) -> str:
    """``count`` synthetic pictures and a CSV annotation file of their visible bodies and heads."""
    rng = np.random.default_rng(0)
    config = SyntheticConfig(width=WIDTH, height=HEIGHT)
    lines = []
    for index in range(count):
        image, gtboxes = generate_image(rng, config)
        path = os.path.join(folder, f"image_{index:04d}.jpg")
        cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        first = len(lines)
        for person in (box for box in gtboxes if box["tag"] == "person"):
            for key, name in (("vbox", "person"), ("hbox", "head")):
                x, y, w, h = person[key]
                x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + w, WIDTH), min(y + h, HEIGHT)
                if x2 - x1 >= 1 and y2 - y1 >= 1:
                    lines.append(f"{path},{x1},{y1},{x2},{y2},{name}")
        if len(lines) == first:
            lines.append(f"{path},,,,,")
    annotations = os.path.join(folder, "annotations.csv")
    with open(annotations, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return annotations


def write_video(path: str, frames: List[np.ndarray]) -> float:
    """Encode ``frames`` as detect.py does (mp4v); returns the seconds it took."""
    start = time.perf_counter()
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (WIDTH, HEIGHT))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return time.perf_counter() - start


def decode_seconds(path: str) -> float:
    start = time.perf_counter()
    capture = cv2.VideoCapture(path)
    while capture.read()[0]:
        pass
    capture.release()
    return time.perf_counter() - start


def main(args: argparse.Namespace) -> dict:
    results = {"machine": platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
               "depth": args.depth}
    with tempfile.TemporaryDirectory() as work:
        checkpoint = os.path.join(work, "model.pt")
        write_checkpoint(checkpoint, args.depth)
        classes = os.path.join(work, "classes.csv")
        with open(classes, "w") as handle:
            handle.write("person,0\nhead,1\n")

        if args.images:
            annotations = write_images(work, args.images)
            totals = {"network": 0.0}
            start = time.perf_counter()
            with network_clock(totals):
                csv_validation.main(csv_validation.get_args_parser().parse_args([
                    "--csv_val", annotations, "--csv_classes", classes, "--model_path", checkpoint,
                    "--output_dir", os.path.join(work, "val_results")]))
            wall = time.perf_counter() - start
            results["csv_validation"] = {"images": args.images, "wall_s": wall, "network_s": totals["network"],
                                         "network_share": totals["network"] / wall}

        if args.frames:
            rng = np.random.default_rng(1)
            config = SyntheticConfig(width=WIDTH, height=HEIGHT)
            frames = [cv2.cvtColor(generate_image(rng, config)[0], cv2.COLOR_RGB2BGR) for _ in range(args.frames)]
            video = os.path.join(work, "crowd.mp4")
            encode = write_video(video, frames)
            decode = decode_seconds(video)
            totals = {"network": 0.0}
            start = time.perf_counter()
            with network_clock(totals):
                detect.main(detect.get_args_parser().parse_args([
                    "--model_path", checkpoint, "--input", video, "--output_dir", os.path.join(work, "detect")]))
            wall = time.perf_counter() - start
            results["detect_video"] = {"frames": args.frames, "wall_s": wall, "network_s": totals["network"],
                                       "network_share": totals["network"] / wall, "decode_alone_s": decode,
                                       "encode_alone_s": encode,
                                       "sum_s": totals["network"] + decode + encode}

    print(f"\nbench_end_to_end: {results['machine']} CPU, {results['cores']} cores, ResNet-{args.depth}, "
          f"{WIDTH}x{HEIGHT} inputs, the scripts' defaults")
    if "csv_validation" in results:
        row = results["csv_validation"]
        print(f"csv_validation.py, {row['images']} images: wall {row['wall_s']:.1f} s, "
              f"network {row['network_s']:.1f} s = {row['network_share']:.1%} of the wall time")
    if "detect_video" in results:
        row = results["detect_video"]
        print(f"detect.py, {row['frames']}-frame video: wall {row['wall_s']:.1f} s, network {row['network_s']:.1f} s "
              f"= {row['network_share']:.1%}; decoding alone {row['decode_alone_s']:.1f} s, encoding alone "
              f"{row['encode_alone_s']:.1f} s; network + decoding + encoding {row['sum_s']:.1f} s")
    write_json(args.output, results)
    print(f"wrote {args.output}")
    return results


if __name__ == "__main__":
    run_cli(main, get_args_parser())
