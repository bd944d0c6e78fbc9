"""Model speed on this machine: conv/matmul peak, FLOPs, inference and training-step time, % of peak.

Usage:
    python benchmarks/bench_model.py [--device cpu] [--depths 18 50] [--size 512] [--repeats 3] [--warmup 1]
    python benchmarks/bench_model.py --quick        # tiny settings: a smoke test of under a minute

Measures (a) the peak GFLOP/s of a channels-last 3x3 conv (256->256 on 1x256x100x152) and of a
2048^3 matmul; (b) the model's FLOPs with torch.utils.flop_counter; (c) inference images/s at
batch 1 and 8, once with the initial prior (scores ~0.01: nothing passes the 0.05 threshold) and
once with every score ~0.1 (what a half-trained model produces, so top-k and NMS have real work),
split into network (``model.features`` and ``model.head_outputs``) and post-processing (the rest of ``forward``);
(d) a training step at batch 2 and 4 with ~20 boxes and 2 ignore regions per image, split into
forward, loss (matching included), backward and the fused Adam step train.py uses.
% of peak = model FLOPs / time / measured conv peak. Every figure is the best of ``--repeats`` runs
(the run with the shortest total), since other processes on a shared machine only ever add time;
the configurations are timed round-robin so that a slow spell costs each of them one run at most.
Prints a table and writes JSON (default benchmarks/results/bench_model.json).
"""
import argparse
import contextlib
import copy
import dataclasses
import math
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Sequence, Tuple

# Run from a checkout without installing the package: make the repository root importable.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from tqdm import tqdm  # noqa: E402

from retinanet.cli import resolve_device, run_cli  # noqa: E402
from retinanet.errors import UserError  # noqa: E402
from retinanet.io_utils import write_json  # noqa: E402
from retinanet.model import RESNET_DEPTHS, RetinaNet, build_retinanet  # noqa: E402
from retinanet.training import build_optimizer  # noqa: E402

DEFAULT_OUTPUT = os.path.join(REPO_ROOT, "benchmarks", "results", "bench_model.json")
CONV_PEAK = "conv3x3_256_1x256x100x152_channels_last"
MATMUL_PEAK = "matmul_2048x2048x2048"
# A peak measured too low would inflate every % of peak; one peak run is under 0.1 s on 2 cores.
PEAK_MIN_REPEATS = 10
HALF_TRAINED_SCORE = 0.1
SCORE_SETTINGS = ("prior", "0.1")
IGNORE_REGIONS_PER_IMAGE = 2
# Targets of issue 2 (2-core CPU), in %.
MAX_POSTPROCESS_PCT = 5.0
MIN_INFERENCE_PEAK_PCT = 85.0
MIN_TRAINING_PEAK_PCT = 75.0
MAX_LOSS_PCT = 10.0

Sync = Callable[[], None]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu",
                        help="torch device: cpu, cuda, cuda:1 (default: %(default)s)")
    parser.add_argument("--depths", type=int, nargs="+", default=[18, 50], choices=sorted(RESNET_DEPTHS),
                        help="ResNet depths to measure (default: 18 50)")
    parser.add_argument("--size", type=int, default=512,
                        help="square input side in pixels, a multiple of 32 (default: %(default)s)")
    parser.add_argument("--num_classes", type=int, default=80,
                        help="classes of the heads; 80 (the published COCO checkpoint) is the largest head, "
                             "top-k and loss; CrowdHuman has 2 (default: %(default)s)")
    parser.add_argument("--inference_batches", type=int, nargs="+", default=[1, 8],
                        help="inference batch sizes (default: 1 8)")
    parser.add_argument("--train_batches", type=int, nargs="+", default=[2, 4],
                        help="training-step batch sizes (default: 2 4)")
    parser.add_argument("--boxes_per_image", type=int, default=20,
                        help="ground-truth boxes per training image (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs per measurement; the best one is reported (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed runs before each measurement (default: %(default)s)")
    parser.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=True,
                        help="model and inputs in channels-last memory format (default: on)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice, one per core)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test in under a minute; overrides the flags above with ResNet-18, "
                             "128x128, inference batches 1 and 2, training batch 2, one timed run")
    parser.add_argument("--output", default=DEFAULT_OUTPUT,
                        help="JSON file to write (default: benchmarks/results/bench_model.json)")
    return parser


def apply_quick(args: argparse.Namespace) -> None:
    args.depths = [18]
    args.size = 128
    args.inference_batches = [1, 2]
    args.train_batches = [2]
    args.repeats = 1
    args.warmup = 1


def check_args(args: argparse.Namespace) -> None:
    if args.size <= 0 or args.size % 32:
        raise UserError(f"--size {args.size}: must be a positive multiple of 32 (the stride of P5)")
    for flag in ("num_classes", "repeats", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag} {value}: must be at least 1")
    for flag in ("warmup", "boxes_per_image"):
        if getattr(args, flag) < 0:
            raise UserError(f"--{flag} {getattr(args, flag)}: must be at least 0")
    for flag in ("inference_batches", "train_batches"):
        if min(getattr(args, flag)) < 1:
            raise UserError(f"--{flag} {getattr(args, flag)}: batch sizes must be at least 1")


def synchronizer(device: torch.device) -> Sync:
    """A call that waits for the device's queued work: CUDA kernels run asynchronously."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


@dataclasses.dataclass
class Measurement:
    """One configuration to time: ``step()`` runs it once and returns its phase durations in seconds."""

    kind: str  # "inference" or "training"
    labels: Dict[str, object]  # depth, batch, and scores for inference
    step: Callable[[], Dict[str, float]]
    info: Dict[str, float] = dataclasses.field(default_factory=dict)  # what the last run saw
    runs: List[Dict[str, float]] = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.kind} " + " ".join(f"{key} {value}" for key, value in self.labels.items())

    def best(self) -> Dict[str, float]:
        """The timed run with the shortest total: other processes only ever add time."""
        return min(self.runs, key=lambda phases: sum(phases.values()))


def run_interleaved(measurements: List[Measurement], repeats: int, warmup: int, bar: tqdm) -> None:
    """Warm every measurement up, then time them round-robin, ``repeats`` rounds.

    A slow spell caused by another process then costs each configuration at most one of its runs,
    instead of every run of whichever configuration happened to be timed at that moment.
    """
    for measurement in measurements:
        bar.set_postfix_str(f"warm-up {measurement.name}")
        for _ in range(warmup):
            measurement.step()
            bar.update()
    for round_index in range(repeats):
        for measurement in measurements:
            bar.set_postfix_str(f"round {round_index + 1}/{repeats} {measurement.name}")
            measurement.runs.append(measurement.step())
            bar.update()


@contextlib.contextmanager
def timed_network(model: RetinaNet, sync: Sync, durations: List[float]):
    """Inside the block the network part of each ``forward`` (from the start of ``model.features`` to the
    end of ``model.head_outputs``) appends its duration to ``durations``. Shadowing the methods on the
    instance measures ``forward`` as it is."""
    features, head_outputs = model.features, model.head_outputs
    started: List[float] = []

    def timed_features(images: torch.Tensor) -> List[torch.Tensor]:
        sync()
        started.append(time.perf_counter())
        return features(images)

    def timed_head_outputs(levels: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        outputs = head_outputs(levels)
        sync()
        durations.append(time.perf_counter() - started.pop())
        return outputs

    model.features, model.head_outputs = timed_features, timed_head_outputs
    try:
        yield
    finally:
        del model.features, model.head_outputs


def peak_gflops(device: torch.device, repeats: int) -> Dict[str, Dict[str, float]]:
    """GFLOP/s of a channels-last 3x3 conv 256->256 on (1, 256, 100, 152) and of a 2048^3 fp32 matmul.

    ``main`` measures them before and after the model and keeps the better: a burst of load from
    another process during these few 0.1 s runs would otherwise set the bar low."""
    sync = synchronizer(device)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).to(device, memory_format=torch.channels_last)
    features = torch.randn(1, 256, 100, 152, device=device).contiguous(memory_format=torch.channels_last)
    left = torch.randn(2048, 2048, device=device)
    right = torch.randn(2048, 2048, device=device)
    kernels = {CONV_PEAK: lambda: conv(features), MATMUL_PEAK: lambda: left @ right}
    peaks = {}
    with torch.no_grad():
        for name, kernel in kernels.items():
            with FlopCounterMode(display=False) as counter:
                kernel()
            flops = counter.get_total_flops()
            kernel()  # warm-up: oneDNN / cuBLAS pick and cache their kernels on the first call
            times = []
            for _ in range(max(repeats, PEAK_MIN_REPEATS)):
                sync()
                start = time.perf_counter()
                kernel()
                sync()
                times.append(time.perf_counter() - start)
            seconds = min(times)
            peaks[name] = {"gflop": flops / 1e9, "seconds": seconds, "gflops_per_s": flops / seconds / 1e9}
    return peaks


def random_images(batch_size: int, size: int, device: torch.device, channels_last: bool) -> torch.Tensor:
    """(B, 3, size, size) normal noise, channels-last in memory when asked."""
    images = torch.randn(batch_size, 3, size, size, device=device)
    return images.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def build_model(depth: int, num_classes: int, device: torch.device, channels_last: bool) -> RetinaNet:
    model = build_retinanet(num_classes, depth).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def set_scores_near(model: RetinaNet, score: float) -> None:
    """Make every class score about ``score``: bias = logit(score), small random output weights so
    scores still differ and top-k and NMS see a realistic, varied ordering."""
    output = model.classificationModel.output
    with torch.no_grad():
        output.weight.normal_(0, 1e-5)
        output.bias.fill_(math.log(score / (1.0 - score)))


def random_targets(
    batch_size: int, num_boxes: int, size: int, num_classes: int, device: torch.device
) -> List[Dict[str, torch.Tensor]]:
    """Per image ``num_boxes`` boxes 3-31% of the image wide (16-160 px at 512) with random labels, and
    2 ignore regions a quarter of the image wide (CrowdHuman images have some): matching does all its work."""
    targets = []
    for _ in range(batch_size):
        wh = (torch.rand(num_boxes, 2, device=device) * 0.28 + 0.03) * size
        xy = torch.rand(num_boxes, 2, device=device) * (size - wh)
        ignore_wh = torch.full((IGNORE_REGIONS_PER_IMAGE, 2), size / 4, device=device)
        ignore_xy = torch.rand(IGNORE_REGIONS_PER_IMAGE, 2, device=device) * (size - ignore_wh)
        targets.append({
            "boxes": torch.cat([xy, xy + wh], dim=1),  # (N, 4) x1y1x2y2
            "labels": torch.randint(0, num_classes, (num_boxes,), device=device),
            "ignore": torch.cat([ignore_xy, ignore_xy + ignore_wh], dim=1),  # (M, 4) x1y1x2y2
        })
    return targets


def count_inference_flops(model: RetinaNet, images: torch.Tensor) -> int:
    """FLOPs of the network (features and heads) on images (B, 3, H, W); top-k and NMS have no counted FLOPs."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.head_outputs(model.features(images))
    return counter.get_total_flops()


def count_training_flops(
    model: RetinaNet, images: torch.Tensor, targets: List[Dict[str, torch.Tensor]]
) -> Tuple[int, int]:
    """(forward, backward) FLOPs of one training step on images (B, 3, H, W)."""
    with FlopCounterMode(display=False) as forward_counter:
        losses = model(images, targets)
        loss = losses["classification"] + losses["regression"]
    with FlopCounterMode(display=False) as backward_counter:
        loss.backward()
    model.zero_grad(set_to_none=True)
    return forward_counter.get_total_flops(), backward_counter.get_total_flops()


def inference_step(
    model: RetinaNet, images: torch.Tensor, sync: Sync, info: Dict[str, float]
) -> Callable[[], Dict[str, float]]:
    """One ``model(images)`` split into network and post-processing seconds; records detections per image."""

    def step() -> Dict[str, float]:
        network: List[float] = []
        with torch.no_grad(), timed_network(model, sync, network):
            sync()
            start = time.perf_counter()
            detections = model(images)
            sync()
            total = time.perf_counter() - start
        info["detections_per_image"] = statistics.mean(len(d["scores"]) for d in detections)
        return {"network": network[0], "postprocess": total - network[0]}

    return step


def training_step(
    model: RetinaNet,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    targets: List[Dict[str, torch.Tensor]],
    sync: Sync,
) -> Callable[[], Dict[str, float]]:
    """One training step split into forward, loss (matching included), backward and optimizer seconds."""

    def step() -> Dict[str, float]:
        network: List[float] = []
        with timed_network(model, sync, network):
            sync()
            start = time.perf_counter()
            losses = model(images, targets)
            loss = losses["classification"] + losses["regression"]
            sync()
            forward_and_loss = time.perf_counter() - start
        optimizer.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss.backward()
        sync()
        backward = time.perf_counter() - start
        start = time.perf_counter()
        optimizer.step()
        sync()
        return {"forward": network[0], "loss": forward_and_loss - network[0], "backward": backward,
                "optimizer": time.perf_counter() - start}

    return step


def setup_depth(
    depth: int, args: argparse.Namespace, device: torch.device
) -> Tuple[Dict[str, int], List[Measurement]]:
    """FLOPs per image of one ResNet depth and its inference and training measurements."""
    sync = synchronizer(device)
    size, num_classes = args.size, args.num_classes
    prior = build_model(depth, num_classes, device, args.channels_last).eval()
    one_image = random_images(1, size, device, args.channels_last)
    flops = {"inference": count_inference_flops(prior, one_image)}
    half_trained = copy.deepcopy(prior)
    set_scores_near(half_trained, HALF_TRAINED_SCORE)
    measurements = []
    for scores, model in zip(SCORE_SETTINGS, (prior, half_trained)):
        for batch in args.inference_batches:
            images = random_images(batch, size, device, args.channels_last)
            info: Dict[str, float] = {}
            measurements.append(Measurement("inference", {"depth": depth, "batch": batch, "scores": scores},
                                            inference_step(model, images, sync, info), info))

    model = build_model(depth, num_classes, device, args.channels_last).train()
    # train.py's optimizer: Adam (the original project's choice) with fused steps.
    optimizer = build_optimizer(model, "adam", lr=1e-5, weight_decay=0.0)
    # Every network FLOP (forward, input and weight gradients) scales with the batch: batch 1 counts them.
    one_target = random_targets(1, args.boxes_per_image, size, num_classes, device)
    flops["train_forward"], flops["train_backward"] = count_training_flops(model, one_image, one_target)
    for batch in args.train_batches:
        images = random_images(batch, size, device, args.channels_last)
        targets = random_targets(batch, args.boxes_per_image, size, num_classes, device)
        measurements.append(Measurement("training", {"depth": depth, "batch": batch},
                                        training_step(model, optimizer, images, targets, sync)))
    return flops, measurements


def inference_row(measurement: Measurement, flops_per_image: int) -> Dict[str, object]:
    timing, batch = measurement.best(), measurement.labels["batch"]
    total = timing["network"] + timing["postprocess"]
    gflops = flops_per_image * batch / timing["network"] / 1e9
    return {
        **measurement.labels, "network_s": timing["network"], "postprocess_s": timing["postprocess"],
        "images_per_s": batch / total, "postprocess_pct": 100 * timing["postprocess"] / total,
        "network_gflops_per_s": gflops, "detections_per_image": measurement.info["detections_per_image"],
        "runs": measurement.runs,
    }


def training_row(measurement: Measurement, forward_flops: int, backward_flops: int) -> Dict[str, object]:
    timing, batch = measurement.best(), measurement.labels["batch"]
    step = sum(timing.values())
    gflops = (forward_flops + backward_flops) * batch / (timing["forward"] + timing["backward"]) / 1e9
    return {
        **measurement.labels, **{f"{phase}_s": seconds for phase, seconds in timing.items()},
        "step_s": step, "images_per_s": batch / step, "loss_pct": 100 * timing["loss"] / step,
        "fwd_bwd_gflops_per_s": gflops, "runs": measurement.runs,
    }


def add_peak_percentages(result: Dict[str, object]) -> None:
    """% of the conv peak for every inference and training row."""
    peak = result["peaks"][CONV_PEAK]["gflops_per_s"]
    for row in result["inference"]:
        row["network_pct_of_conv_peak"] = 100 * row["network_gflops_per_s"] / peak
    for row in result["training"]:
        row["fwd_bwd_pct_of_conv_peak"] = 100 * row["fwd_bwd_gflops_per_s"] / peak


def target_checks(inference: Sequence[Dict], training: Sequence[Dict]) -> List[Dict[str, object]]:
    """Each issue-2 target with its worst measured value and whether it is met."""
    checks = []

    def check(target: str, values: List[float], worst_is_max: bool, limit: float) -> None:
        if values:
            worst = max(values) if worst_is_max else min(values)
            met = worst < limit if worst_is_max else worst >= limit
            checks.append({"target": target, "worst": worst, "met": met})

    check(f"post-processing < {MAX_POSTPROCESS_PCT:g}% of inference at scores ~0.1",
          [r["postprocess_pct"] for r in inference if r["scores"] != "prior"], True, MAX_POSTPROCESS_PCT)
    check(f"inference network >= {MIN_INFERENCE_PEAK_PCT:g}% of conv peak",
          [r["network_pct_of_conv_peak"] for r in inference], False, MIN_INFERENCE_PEAK_PCT)
    check(f"training fwd+bwd >= {MIN_TRAINING_PEAK_PCT:g}% of conv peak",
          [r["fwd_bwd_pct_of_conv_peak"] for r in training], False, MIN_TRAINING_PEAK_PCT)
    check(f"loss + matching < {MAX_LOSS_PCT:g}% of a training step",
          [r["loss_pct"] for r in training], True, MAX_LOSS_PCT)
    return checks


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """Right-aligned columns, each as wide as its widest cell."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    return [" ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in (headers, *rows)]


def format_report(result: Dict[str, object]) -> str:
    machine, settings = result["machine"], result["settings"]
    lines = [
        f"bench_model: {machine['device_name']}, {machine['torch_threads']} torch threads, "
        f"torch {machine['torch']}; load average {machine['load_average_at_start'][0]:.1f} at start, "
        f"{machine['load_average_at_end'][0]:.1f} at end, CPU share {machine['cpu_share']:.2f}; "
        f"{settings['size']}x{settings['size']}, {settings['num_classes']} classes, "
        f"channels_last={settings['channels_last']}, best of {settings['repeats']} runs",
        "",
    ]
    lines += format_table(
        ["peak kernel", "GFLOP", "s", "GFLOP/s"],
        [[name, f"{p['gflop']:.2f}", f"{p['seconds']:.4f}", f"{p['gflops_per_s']:.1f}"]
         for name, p in result["peaks"].items()])
    lines.append("")
    lines += format_table(
        ["depth", "inference GFLOP/img", "train fwd GFLOP/img", "train bwd GFLOP/img"],
        [[str(depth), f"{f['inference'] / 1e9:.2f}", f"{f['train_forward'] / 1e9:.2f}",
          f"{f['train_backward'] / 1e9:.2f}"] for depth, f in result["flops_per_image"].items()])
    lines.append("")
    lines += format_table(
        ["depth", "batch", "scores", "net s", "post s", "img/s", "post %", "net GFLOP/s", "% conv peak",
         "dets/img"],
        [[str(r["depth"]), str(r["batch"]), r["scores"], f"{r['network_s']:.3f}", f"{r['postprocess_s']:.3f}",
          f"{r['images_per_s']:.2f}", f"{r['postprocess_pct']:.1f}", f"{r['network_gflops_per_s']:.1f}",
          f"{r['network_pct_of_conv_peak']:.1f}", f"{r['detections_per_image']:.0f}"]
         for r in result["inference"]])
    lines.append("")
    lines += format_table(
        ["depth", "batch", "fwd s", "loss s", "bwd s", "opt s", "step s", "img/s", "loss %",
         "fwd+bwd GFLOP/s", "% conv peak"],
        [[str(r["depth"]), str(r["batch"]), f"{r['forward_s']:.3f}", f"{r['loss_s']:.3f}",
          f"{r['backward_s']:.3f}", f"{r['optimizer_s']:.3f}", f"{r['step_s']:.3f}",
          f"{r['images_per_s']:.2f}", f"{r['loss_pct']:.1f}", f"{r['fwd_bwd_gflops_per_s']:.1f}",
          f"{r['fwd_bwd_pct_of_conv_peak']:.1f}"]
         for r in result["training"]])
    lines.append("")
    for check in result["targets"]:
        lines.append(f"{'met ' if check['met'] else 'MISS'} {check['target']}: worst {check['worst']:.1f}%")
    return "\n".join(lines)


def machine_info(device: torch.device) -> Dict[str, object]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"
    return {
        "device": str(device), "device_name": name, "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
        # Other processes on a shared machine slow every figure; the load says whether they ran.
        "load_average_at_start": list(os.getloadavg()),
    }


def main(args: argparse.Namespace) -> Dict[str, object]:
    if args.quick:
        apply_quick(args)
    check_args(args)
    device = resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    settings = ("size", "num_classes", "inference_batches", "train_batches", "boxes_per_image", "repeats",
                "warmup", "channels_last", "threads")
    result = {"machine": machine_info(device), "settings": {k: getattr(args, k) for k in settings},
              "inference": [], "training": []}

    wall_start, cpu_start = time.perf_counter(), time.process_time()
    per_depth = len(SCORE_SETTINGS) * len(args.inference_batches) + len(args.train_batches)
    steps = 2 + len(args.depths) * (1 + per_depth * (args.warmup + args.repeats))
    with tqdm(total=steps, desc="bench_model", unit="step") as bar:
        bar.set_postfix_str("conv and matmul peaks")
        peaks_before = peak_gflops(device, args.repeats)
        bar.update()
        flops, measurements = {}, []
        for depth in args.depths:
            bar.set_postfix_str(f"ResNet-{depth} FLOPs")
            flops[depth], depth_measurements = setup_depth(depth, args, device)
            measurements += depth_measurements
            bar.update()
        run_interleaved(measurements, args.repeats, args.warmup, bar)
        bar.set_postfix_str("conv and matmul peaks again")
        peaks_after = peak_gflops(device, args.repeats)
        bar.update()

    result["flops_per_image"] = flops
    for m in measurements:
        depth_flops = flops[m.labels["depth"]]
        if m.kind == "inference":
            result["inference"].append(inference_row(m, depth_flops["inference"]))
        else:
            result["training"].append(
                training_row(m, depth_flops["train_forward"], depth_flops["train_backward"]))
    result["peaks"] = {name: max(peaks_before[name], peaks_after[name], key=lambda p: p["gflops_per_s"])
                       for name in peaks_before}
    result["peaks_before_and_after"] = {"before": peaks_before, "after": peaks_after}
    add_peak_percentages(result)
    # CPU time over wall time x threads: well below 1, other processes took cores from this one.
    result["machine"]["cpu_share"] = (time.process_time() - cpu_start) / (
        (time.perf_counter() - wall_start) * torch.get_num_threads())
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    result["targets"] = target_checks(result["inference"], result["training"])
    print(format_report(result))
    write_json(args.output, result)
    print(f"\nwrote {args.output}")
    return result


if __name__ == "__main__":
    run_cli(main, get_args_parser())
