"""Peak memory of detect.py on a long video and of csv_validation.py on many images.

Usage:
    python benchmarks/bench_memory.py                      # 1- and 5-minute 720p videos, 200 and 2000 images
    python benchmarks/bench_memory.py --video_minutes 0.1 0.5 --csv_images 50 200       # a quick look
    python benchmarks/bench_memory.py --video_minutes --no_coco                   # csv_validation without COCO AP

Each run is a subprocess with a tiny model (ResNet-18 RetinaNet, 32 FPN channels, seeded random weights
scaled so that tens of boxes per frame score above detect.py's 0.5) at small --min_side/--max_side,
so that minutes of video take minutes on two CPU cores. Measured per run:
  peak RSS   the largest resident set of the script or any of its loader workers (wait4's ru_maxrss: exact,
             taken by a small launcher process; see LAUNCHER)
  peak PSS   the largest sum of proportional set sizes over the script and its workers, sampled every
             0.2 s (shared pages counted once)
  script / worker peak RSS   each process's own high-water mark (VmHWM), as last sampled
  detections the boxes written, and what they take as numpy arrays (28 bytes each: 4 float32 + float32 + int64)
Memory that grows with the length of the input by no more than the detections is streaming.
The generated inputs are cached in benchmarks/results/ (a 5-minute video is written once).
Writes benchmarks/results/bench_memory.json.
"""
import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List

import cv2
import numpy as np
import torch
from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from retinanet.checkpoint import CHECKPOINT_FORMAT, save_checkpoint  # noqa: E402
from retinanet.cli import run_cli  # noqa: E402
from retinanet.errors import UserError  # noqa: E402
from retinanet.io_utils import atomic_open, write_json  # noqa: E402
from retinanet.model import RetinaNet  # noqa: E402
from tests.helpers import randomise_heads  # noqa: E402  (the same "looks trained" heads as the tests)

RESULTS = os.path.join(ROOT, "benchmarks", "results")
CLASS_NAMES = ["person", "head"]
DETECTION_BYTES = 4 * 4 + 4 + 8  # one box: float32 corners, float32 score, int64 label
MIB = 2 ** 20
SAMPLE_SECONDS = 0.2


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video_minutes", type=float, nargs="*", default=[1.0, 5.0],
                        help="lengths of the generated videos detect.py runs on (default: %(default)s; none: skip)")
    parser.add_argument("--csv_images", type=int, nargs="*", default=[200, 2000],
                        help="image counts csv_validation.py runs on (default: %(default)s; none: skip)")
    parser.add_argument("--width", type=int, default=1280, help="video width (default: %(default)s)")
    parser.add_argument("--height", type=int, default=720, help="video height (default: %(default)s)")
    parser.add_argument("--fps", type=float, default=30.0, help="video frame rate (default: %(default)s)")
    parser.add_argument("--min_side", type=int, default=96, help="model input short side (default: %(default)s)")
    parser.add_argument("--max_side", type=int, default=160, help="model input long side (default: %(default)s)")
    parser.add_argument("--batch_size", type=int, default=8, help="(default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="loader processes (default: %(default)s)")
    parser.add_argument("--no_images", action="store_true",
                        help="detect.py without the annotated video (inference and detections.jsonl only)")
    parser.add_argument("--no_coco", action="store_true",
                        help="csv_validation.py without COCO AP (whose libraries keep a Python object per detection)")
    parser.add_argument("--output", default=os.path.join(RESULTS, "bench_memory.json"),
                        help="JSON results file (default: %(default)s)")
    return parser


def tiny_model_checkpoint(path: str) -> None:
    """A seeded random ResNet-18 RetinaNet with 32 FPN channels that detects like a trained one.

    The stock initialisation scores every anchor 0.01 (zero output weights); random head weights spread
    the scores so that tens of boxes per 160x90 frame pass 0.5, and random box offsets vary their shapes.
    """
    torch.manual_seed(0)
    model = RetinaNet(num_classes=len(CLASS_NAMES), depth=18, feature_size=32).eval()
    randomise_heads(model, class_bias=-1.5)
    save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "model": model.state_dict(),
                           "class_names": CLASS_NAMES, "model_args": model.model_args()})


def moving_rectangles(index: int, background: np.ndarray) -> np.ndarray:
    """Frame ``index``: six filled rectangles gliding and bouncing over ``background`` (H, W, 3) BGR."""
    frame = background.copy()
    height, width = frame.shape[:2]
    for k in range(6):
        w, h = width // (8 + k), height // (4 + k)
        # A triangle wave: the position runs to the far edge and back.
        x = abs((37 + 11 * k) * index % (2 * (width - w)) - (width - w))
        y = abs((23 + 7 * k) * index % (2 * (height - h)) - (height - h))
        colour = tuple(int(c) for c in (255 - 40 * k, 60 + 30 * k, 40 * k))
        cv2.rectangle(frame, (x, y), (x + w, y + h), colour, -1)
    return frame


def frame_count(path: str) -> int:
    capture = cv2.VideoCapture(path)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    return count


def cached_video(minutes: float, args: argparse.Namespace) -> "tuple[str, int]":
    """The path and frame count of a ``minutes``-long mp4v video, written here once and reused."""
    frames = int(round(minutes * 60 * args.fps))
    path = os.path.join(RESULTS, f"video_{args.width}x{args.height}_{args.fps:g}fps_{frames}frames.mp4")
    if os.path.isfile(path) and frame_count(path) == frames:
        return path, frames
    os.makedirs(RESULTS, exist_ok=True)
    partial = path[: -len(".mp4")] + ".partial.mp4"  # OpenCV picks the container from the extension
    writer = cv2.VideoWriter(partial, cv2.VideoWriter_fourcc(*"mp4v"), args.fps, (args.width, args.height))
    if not writer.isOpened():
        raise UserError(f"{partial}: OpenCV cannot write mp4v video")
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8), (31, 31), 0)
    try:
        for index in tqdm(range(frames), desc=f"writing {os.path.basename(path)}", unit="frame", dynamic_ncols=True):
            writer.write(moving_rectangles(index, background))
    finally:
        writer.release()
    os.replace(partial, path)
    return path, frames


def cached_csv_dataset(num_images: int) -> str:
    """An annotation CSV over ``num_images`` tiny JPEGs (96x128, two or three boxes each), written once."""
    folder = os.path.join(RESULTS, "csv_images")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    encoded = []
    for variant in range(8):
        image = rng.integers(0, 60, (96, 128, 3), dtype=np.uint8)
        cv2.rectangle(image, (8 + 8 * variant, 10), (48 + 8 * variant, 60), (255, 255, 255), -1)
        encoded.append(cv2.imencode(".jpg", image)[1].tobytes())
    lines = []
    for index in range(num_images):
        path = os.path.join(folder, f"image_{index:05d}.jpg")
        if not os.path.isfile(path):
            with atomic_open(path, "wb") as handle:
                handle.write(encoded[index % len(encoded)])
        x = 8 + 8 * (index % len(encoded))
        lines += [f"{path},{x},10,{x + 40},60,person", f"{path},{x + 4},10,{x + 20},24,head"]
        if index % 3 == 0:
            lines.append(f"{path},80,40,120,90,person")
    annotations = os.path.join(RESULTS, f"csv_{num_images}.csv")
    with atomic_open(annotations, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return annotations


def _process_tree(root: int) -> List[int]:
    """``root`` and its descendants, found from the parent pid of every process in /proc."""
    parents: Dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as handle:
                    # The command name (field 2) may hold spaces; the parent pid follows its closing ")".
                    parents[int(name)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def _proc_kib(path: str, field: str) -> int:
    """A ``field: <n> kB`` line of a /proc file; 0 once the process is gone."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# Runs the command sys.argv[1:] as its child and reports the child's peak RSS. ru_maxrss keeps the high-water mark of
# the memory image a process replaced by exec, so a script forked straight from this benchmark (which
# holds torch and a decoded video's worth of pages) would report this benchmark's size; forked from
# this small launcher, it reports its own peak and its loader workers'.
LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(f"peak_rss_kib={usage.ru_maxrss}", flush=True)
sys.exit(os.waitstatus_to_exitcode(status) & 255)
"""


def measure(command: List[str], log_path: str) -> dict:
    """Run ``command`` (an executable's path and its arguments); its wall seconds, exact peak RSS (the script
    or any loader worker), and from samples every 0.2 s the peak PSS summed over the script and its
    workers and the peak RSS of the script alone and of its workers (each one's VmHWM when last seen)."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, *command], stdout=log,
                                    stderr=subprocess.STDOUT, cwd=ROOT)
        peak_pss = [0]
        script_kib, worker_kib = [0], [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(SAMPLE_SECONDS):
                tree = _process_tree(launcher.pid)[1:]  # breadth first: the script, then its workers
                if not tree:
                    continue
                peak_pss[0] = max(peak_pss[0], sum(_proc_kib(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in tree))
                high_water = [_proc_kib(f"/proc/{pid}/status", "VmHWM:") for pid in tree]
                script_kib[0] = max(script_kib[0], high_water[0])
                worker_kib[0] = max([worker_kib[0], *high_water[1:]])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            returncode = launcher.wait()
        except BaseException:
            for pid in reversed(_process_tree(launcher.pid)):
                os.kill(pid, signal.SIGKILL)
            launcher.wait()
            raise
        finally:
            done.set()
            sampler.join()
    with open(log_path) as handle:
        text = handle.read()
    if returncode != 0:
        raise UserError(f"{shlex.join(command)} failed with status {returncode}:\n{text[-2000:]}")
    peak_kib = int(text.rsplit("peak_rss_kib=", 1)[1].split()[0])  # Linux reports KiB
    return {"wall_seconds": round(time.perf_counter() - start, 1),
            "peak_rss_mib": round(peak_kib / 1024, 1),
            "peak_pss_mib": round(peak_pss[0] / 1024, 1),
            "script_peak_rss_mib": round(script_kib[0] / 1024, 1),
            "worker_peak_rss_mib": round(worker_kib[0] / 1024, 1)}


def count_boxes(jsonl_path: str) -> "tuple[int, int]":
    """(records, boxes) in a detections.jsonl."""
    records = boxes = 0
    with open(jsonl_path, encoding="utf-8") as handle:
        for line in handle:
            records += 1
            boxes += len(json.loads(line)["scores"])
    return records, boxes


def bench_video(minutes: float, checkpoint: str, work: str, args) -> dict:
    path, frames = cached_video(minutes, args)
    output_dir = os.path.join(work, f"detect_{frames}")
    command = [sys.executable, "detect.py", "--model_path", checkpoint, "--input", path, "--output_dir", output_dir,
               "--min_side", str(args.min_side), "--max_side", str(args.max_side), "--batch_size",
               str(args.batch_size), "--workers", str(args.workers), "--device", "cpu"]
    if args.no_images:
        command.append("--no_images")
    print(f"detect.py on {minutes:g} min ({frames} frames) ...", flush=True)
    row = measure(command, os.path.join(work, f"detect_{frames}.log"))
    records, boxes = count_boxes(os.path.join(output_dir, "detections.jsonl"))
    if records != frames:
        raise UserError(f"{path}: detect.py recorded {records} frames of {frames}")
    return {"input": f"video {minutes:g} min", "items": frames, "detections": boxes,
            "detections_mib": round(boxes * DETECTION_BYTES / MIB, 1), **row}


def bench_csv(num_images: int, checkpoint: str, work: str, args) -> dict:
    annotations = cached_csv_dataset(num_images)
    output_dir = os.path.join(work, f"validate_{num_images}")
    command = [sys.executable, "csv_validation.py", "--model_path", checkpoint, "--csv_val", annotations,
               "--output_dir", output_dir, "--min_side", str(args.min_side), "--max_side", str(args.max_side),
               "--batch_size", str(args.batch_size), "--workers", str(args.workers), "--device", "cpu",
               *(["--no_coco"] if args.no_coco else [])]
    print(f"csv_validation.py on {num_images} images{' (--no_coco)' if args.no_coco else ''} ...", flush=True)
    row = measure(command, os.path.join(work, f"validate_{num_images}.log"))
    records, boxes = count_boxes(os.path.join(output_dir, "detections.jsonl"))
    return {"input": f"csv {num_images} images" + (", no COCO" if args.no_coco else ""), "items": records,
            "detections": boxes,
            "detections_mib": round(boxes * DETECTION_BYTES / MIB, 1), **row}


def print_table(rows: List[dict]) -> None:
    print(f"\n{'input':<20}{'frames/images':>14}{'detections':>12}{'as numpy':>10}"
          f"{'peak RSS':>10}{'script':>10}{'worker':>10}{'peak PSS':>10}{'wall':>8}")
    for row in rows:
        print(f"{row['input']:<20}{row['items']:>14}{row['detections']:>12}{row['detections_mib']:>6.1f} MiB"
              + "".join(f"{row[key]:>6.0f} MiB" for key in ("peak_rss_mib", "script_peak_rss_mib",
                                                             "worker_peak_rss_mib", "peak_pss_mib"))
              + f"{row['wall_seconds']:>7.0f}s")


def main(args: argparse.Namespace) -> dict:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as work:
        checkpoint = os.path.join(work, "tiny.pt")
        tiny_model_checkpoint(checkpoint)
        runs = [(bench_video, minutes) for minutes in sorted(args.video_minutes)]
        runs += [(bench_csv, num_images) for num_images in sorted(args.csv_images)]
        for bench, size in runs:
            rows.append(bench(size, checkpoint, work, args))
            print(f"  peak RSS {rows[-1]['peak_rss_mib']:.0f} MiB, peak PSS {rows[-1]['peak_pss_mib']:.0f} MiB, "
                  f"{rows[-1]['detections']} detections, {rows[-1]['wall_seconds']:.0f} s", flush=True)
    print_table(rows)
    document = {
        "settings": {key: value for key, value in vars(args).items() if key != "output"},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "opencv": cv2.__version__},
        "rows": rows,
    }
    write_json(args.output, document)
    print(f"wrote {args.output}")
    return document


if __name__ == "__main__":
    run_cli(main, get_args_parser())
