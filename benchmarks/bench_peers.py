"""Ours against the peers users switch from, side by side in one process: inference and a training step.

Usage:
    PYTORCH_RETINANET_PATH=/path/to/pytorch-retinanet python benchmarks/bench_peers.py
    python benchmarks/bench_peers.py --original_path /path/to/pytorch-retinanet --repeats 5
    python benchmarks/bench_peers.py --quick          # ResNet-18, 256 px, 1 repeat: a smoke test

Configurations, all ResNet-50 FPN RetinaNets with random weights and ``--num_classes`` classes (2:
person and head, what this toolkit is for; 80 for COCO), every class score about 0.1
(classification bias -2.2 with tiny random output weights, as a half-trained model gives: top-k and
NMS have real work to do):

- pytorch-retinanet: the original project's ``model.resnet50`` from its checkout (skipped, with a
  message, when no checkout is given); inference on one image at a time, as its code allows;
- torchvision: ``retinanet_resnet50_fpn`` (its own transform sized not to resize), inference only;
- ours fp32 and ours bf16: ``retinanet.model.resnet50`` as README's Python example builds it
  (channels-last by itself), called under ``retinanet.precision``'s autocast;
- ours under onnxruntime: the exported graph (``retinanet.export``) on the CPU, fp32 (``--no_onnx``
  skips the export, which takes a minute).

Inference is batch 1 at ``--size``; the training step is batch 2 with 20 random boxes per image,
forward + loss + backward + SGD step. Rounds run every configuration once, in turn, so a slow
spell of a shared machine costs each of them one run; a ratio is taken within each round and the
worst round's is reported beside the median times. Prints a table and writes JSON
(default benchmarks/results/bench_peers.json).
"""
import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List

# Run from a checkout without installing the package: make the repository root importable.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from benchmarks.peers import ORIGINAL_PATH_ENV, import_original  # noqa: E402
from retinanet.cli import run_cli  # noqa: E402
from retinanet.io_utils import write_json  # noqa: E402
from retinanet.model import build_retinanet  # noqa: E402
from retinanet.precision import FP32, resolve_precision  # noqa: E402

SCORE_LOGIT = -2.2  # sigmoid(-2.2) = 0.0998
BOXES_PER_IMAGE = 20
TRAIN_BATCH = 2
# Targets of the speed issue on this CPU, as (faster, slower, minimum ratio of their times).
TARGETS = [
    ("inference", "ours fp32", "pytorch-retinanet", 2.3),
    ("inference", "ours fp32", "torchvision", 1.15),
    ("inference", "ours bf16", "pytorch-retinanet", 4.0),
    ("training", "ours fp32", "pytorch-retinanet", 1.1),
    ("training", "ours bf16", "pytorch-retinanet", 2.0),
]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original_path", default=os.environ.get(ORIGINAL_PATH_ENV),
                        help=f"pytorch-retinanet checkout (default: ${ORIGINAL_PATH_ENV}); skipped without one")
    parser.add_argument("--num_classes", type=int, default=2,
                        help="classes: 2 as CrowdHuman's person and head, 80 as COCO (default 2)")
    parser.add_argument("--depth", type=int, default=50, choices=[18, 50], help="ResNet depth (default 50)")
    parser.add_argument("--size", type=int, default=512, help="square input side, a multiple of 32 (default 512)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no_onnx", action="store_true", help="skip the onnxruntime configuration")
    parser.add_argument("--no_training", action="store_true", help="time inference only")
    parser.add_argument("--quick", action="store_true", help="ResNet-18, 256 px, 1 round: a smoke test")
    parser.add_argument("--output", default=os.path.join(REPO_ROOT, "benchmarks", "results", "bench_peers.json"),
                        help="JSON results (default benchmarks/results/bench_peers.json)")
    return parser


def scores_near_a_tenth(output_conv: torch.nn.Conv2d) -> None:
    """Every class score ~0.1 and all different: tiny random output weights, bias logit(0.1)."""
    with torch.no_grad():
        output_conv.weight.copy_(torch.randn(output_conv.weight.shape) * 1e-5)
        output_conv.bias.fill_(SCORE_LOGIT)


def random_targets(batch: int, size: int, num_classes: int,
                   generator: torch.Generator) -> List[Dict[str, torch.Tensor]]:
    """Per image BOXES_PER_IMAGE boxes 3-31% of the image wide, random classes."""
    targets = []
    for _ in range(batch):
        wh = (torch.rand(BOXES_PER_IMAGE, 2, generator=generator) * 0.28 + 0.03) * size
        xy = torch.rand(BOXES_PER_IMAGE, 2, generator=generator) * (size - wh)
        targets.append({"boxes": torch.cat([xy, xy + wh], dim=1),
                        "labels": torch.randint(0, num_classes, (BOXES_PER_IMAGE,), generator=generator)})
    return targets


def ours_configs(args, images, batch, targets, precision, name) -> Dict[str, Callable[[], None]]:
    torch.manual_seed(0)
    model = build_retinanet(args.num_classes, args.depth).eval()
    scores_near_a_tenth(model.classificationModel.output)
    configs = {}

    def infer():
        with precision.autocast(images.device):
            model(images)

    configs[("inference", name)] = infer
    if not args.no_training:
        trained = build_retinanet(args.num_classes, args.depth).train()
        scores_near_a_tenth(trained.classificationModel.output)
        optimizer = torch.optim.SGD(trained.parameters(), lr=1e-5, momentum=0.9)

        def step():
            with precision.autocast(batch.device):
                losses = trained(batch, targets)
            optimizer.zero_grad(set_to_none=True)
            (losses["classification"] + losses["regression"]).backward()
            optimizer.step()

        configs[("training", name)] = step
    return configs


def torchvision_configs(args, images) -> Dict[str, Callable[[], None]]:
    from torchvision.models.detection import retinanet_resnet50_fpn

    if args.depth != 50:
        return {}
    torch.manual_seed(0)
    model = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=args.num_classes,
                                   min_size=args.size, max_size=args.size).eval()
    scores_near_a_tenth(model.head.classification_head.cls_logits)
    image_list = list(images)

    @torch.inference_mode()
    def infer():
        model(image_list)

    return {("inference", "torchvision"): infer}


def original_configs(args, images, batch, targets) -> Dict[str, Callable[[], None]]:
    original, _ = import_original(args.original_path)
    factory = getattr(original, f"resnet{args.depth}")
    torch.manual_seed(0)
    model = factory(args.num_classes, pretrained=False).eval()
    scores_near_a_tenth(model.classificationModel.output)
    configs = {}

    @torch.no_grad()
    def infer():  # its inference handles one image at a time
        for image in images:
            model(image[None])

    configs[("inference", "pytorch-retinanet")] = infer
    if not args.no_training:
        trained = factory(args.num_classes, pretrained=False)
        scores_near_a_tenth(trained.classificationModel.output)
        trained.train()
        trained.freeze_bn()  # as its train.py does
        optimizer = torch.optim.SGD(trained.parameters(), lr=1e-5, momentum=0.9)
        annotations = torch.stack([torch.cat([t["boxes"], t["labels"][:, None].float()], dim=1) for t in targets])

        def step():
            classification, regression = trained([batch, annotations])
            optimizer.zero_grad(set_to_none=True)
            (classification.mean() + regression.mean()).backward()
            optimizer.step()

        configs[("training", "pytorch-retinanet")] = step
    return configs


def onnx_configs(args, images, work_dir: str) -> Dict[str, Callable[[], None]]:
    import onnxruntime

    from retinanet.export import export_onnx

    torch.manual_seed(0)
    model = build_retinanet(args.num_classes, args.depth).eval()
    scores_near_a_tenth(model.classificationModel.output)
    path = os.path.join(work_dir, "model.onnx")
    export_onnx(model, path, [str(k) for k in range(args.num_classes)], sample_size=(args.size, args.size))
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = {"images": images.numpy(), "score_threshold": torch.tensor(0.05).numpy()}
    return {("inference", "ours onnxruntime"): lambda: session.run(None, feed)}


def main(args: argparse.Namespace) -> dict:
    if args.quick:
        args.depth, args.size, args.repeats = 18, 256, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(1, 3, args.size, args.size, generator=generator)
    batch = torch.randn(TRAIN_BATCH, 3, args.size, args.size, generator=generator)
    targets = random_targets(TRAIN_BATCH, args.size, args.num_classes, generator)
    bf16 = resolve_precision("bf16", cpu)
    print(f"bench_peers: {platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}; ResNet-{args.depth}, {args.size}x{args.size}, {args.num_classes} classes; "
          f"ours bf16: {bf16.describe()}")

    configs: Dict[tuple, Callable[[], None]] = {}
    if args.original_path:
        configs.update(original_configs(args, images, batch, targets))
    else:
        print(f"pytorch-retinanet skipped: give --original_path or ${ORIGINAL_PATH_ENV}")
    configs.update(torchvision_configs(args, images))
    configs.update(ours_configs(args, images, batch, targets, FP32, "ours fp32"))
    configs.update(ours_configs(args, images, batch, targets, bf16, "ours bf16"))
    with tempfile.TemporaryDirectory() as work_dir:
        if not args.no_onnx:
            configs.update(onnx_configs(args, images, work_dir))
        times: Dict[tuple, List[float]] = {key: [] for key in configs}
        with tqdm(total=len(configs) * (args.repeats + 1), desc="bench_peers", unit="run") as bar:
            for round_index in range(args.repeats + 1):  # round 0 warms up (oneDNN picks its kernels)
                for key, run in configs.items():
                    bar.set_postfix_str(f"round {round_index}: {key[0]} {key[1]}")
                    start = time.perf_counter()
                    run()
                    if round_index:
                        times[key].append(time.perf_counter() - start)
                    bar.update()

    rows = [{"work": kind, "config": name, "median_s": statistics.median(values), "best_s": min(values),
             "runs_s": values} for (kind, name), values in times.items()]
    print(f"\n{'work':>10} {'configuration':>18} {'median s':>9} {'best s':>8}")
    for row in rows:
        print(f"{row['work']:>10} {row['config']:>18} {row['median_s']:>9.3f} {row['best_s']:>8.3f}")
    ratios = []
    print(f"\n{'work':>10} {'faster':>12} {'than':>18} {'worst-round ratio':>17} {'target':>7}")
    for kind, faster, slower, target in TARGETS:
        if (kind, faster) not in times or (kind, slower) not in times:
            continue
        worst = min(s / f for f, s in zip(times[(kind, faster)], times[(kind, slower)]))
        met = "met" if worst >= target else "MISS"
        ratios.append({"work": kind, "faster": faster, "slower": slower, "worst_ratio": worst, "target": target,
                       "met": worst >= target})
        print(f"{kind:>10} {faster:>12} {slower:>18} {worst:>16.2f}x {target:>6.2f}x {met}")
    if ("inference", "ours onnxruntime") in times:
        worst = min(s / f for f, s in zip(times[("inference", "ours onnxruntime")], times[("inference", "ours fp32")]))
        print(f"onnxruntime vs ours fp32 in PyTorch, inference: {worst:.2f}x (worst round; > 1: onnxruntime faster)")
    result = {"machine": platform.machine(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "depth": args.depth, "size": args.size, "bf16": bf16.describe(),
              "rows": rows, "ratios": ratios}
    write_json(args.output, result)
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    run_cli(main, get_args_parser())
