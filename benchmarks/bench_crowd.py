"""People in crowds: the plain two-class RetinaNet against the person-triplet variant, same data and budget.

Usage:
    python benchmarks/bench_crowd.py --seeds 0 1 2         # README's table (about 110 min on 2 cores)
    python benchmarks/bench_crowd.py                       # one seed (about 35 min)
    python benchmarks/bench_crowd.py --num_train 24 --num_val 8 --epochs 1      # every step, quickly
    python benchmarks/bench_crowd.py --reuse               # score the trained models again

Data: a dense synthetic CrowdHuman nobody tuned for (tools/make_synthetic_crowdhuman.py --crowd dense,
seed 20261201, 640x480; about 20 people and 2.4 full-body pairs at IoU > 0.5 per image). Three models
train from scratch with one recipe (ResNet-18, 64-channel heads, Adam 1e-3, batch 8, cosine, the
same epochs at 480 px):

- plain (full): train.py --dataset csv on build_annotations_file.py --body full: classes person
  (full body) and head, one class-aware NMS at IoU 0.5;
- plain (visible): the same with --body visible, for the visible-body scores a plain model can give;
- triplet: train.py --dataset crowdhuman --person_triplets: one detection per person with its full,
  visible and head boxes, NMS on the default suppression box (model.DEFAULT_SUPPRESSION_BOX), and
  heads as a class of their own, from which each person takes its head (postprocess.attach_heads);
- triplet_emd: the same with --instances_per_anchor 2: two predictions per anchor, the EMD loss,
  Set NMS (CrowdDet's retina_emd_simple).

All are scored on the validation odgt by the official-exact CrowdHuman code
(retinanet.evaluation.person_triplets): full-body AP / MR^-2 / JI (plain: its person class), visible
AP / MR^-2 (plain: the visible model), head AP / MR^-2 (plain: the full model's head class; triplet:
its head class, and the persons' own head boxes as "person's head"), the body-head pair protocol
(triplets only: a plain model does not pair its boxes), and for the
people whose full body overlaps another's at IoU > 0.5 their recall and their AP and MR^-2 with the
other people ignored (crowd_overlaps.overlapped_subset), all from every detection scoring > 0.01 at the
evaluation settings (validation.evaluation_settings). Speed,
measured side by side in this process with the models taking turns: training images/s (one step on
a batch of 4 training images: forward, loss, backward, Adam, at train.py's default precision; best
of 4) and inference images/s (network and post-processing on a batch of 4 validation images, fp32,
at the evaluation settings, best of 5). train.py's own images/s of each run is in the JSON, noisy
when other jobs share the CPU.
Every seed's triplet models are also scored with paired suppression (a row of its own, with its
inference speed), and the first seed's with NMS on each of its three boxes. Prints the tables and writes
benchmarks/results/bench_crowd.json.
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_learning import run_step  # noqa: E402
from retinanet.cli import run_cli  # noqa: E402
from retinanet.data import CrowdHumanDataset, Transform, collate_batch  # noqa: E402
from retinanet.errors import UserError  # noqa: E402
from retinanet.evaluation.crowd_overlaps import overlapped_recall  # noqa: E402
from retinanet.evaluation.person_triplets import (  # noqa: E402
    evaluate_box_kind,
    evaluate_person_triplets,
    kind_detections,
    metrics_document,
    read_people_ground_truth,
)
from retinanet.hub import load_model  # noqa: E402
from retinanet.io_utils import write_json  # noqa: E402
from retinanet.model import DEFAULT_SUPPRESSION_BOX, SUPPRESSION_BOXES  # noqa: E402
from retinanet.precision import resolve_precision  # noqa: E402
from retinanet.training import build_optimizer  # noqa: E402
from retinanet.validation import evaluation_settings, predict_dataset  # noqa: E402

SEED = 20261201
MODELS = ("plain_full", "plain_visible", "triplet", "triplet_emd")
# the person-triplet models and their train.py flags beyond --person_triplets
TRIPLET_MODELS = {"triplet": [], "triplet_emd": ["--instances_per_anchor", "2"]}
RECIPE = ["--depth", "18", "--feature_size", "64", "--no_pretrained", "--batch_size", "8", "--lr", "1e-3",
          "--warmup_iters", "40", "--lr_schedule", "cosine"]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", default=str(ROOT / "benchmarks" / "results" / "bench_crowd"),
                        help="data, checkpoints and logs (default: %(default)s)")
    parser.add_argument("--num_train", type=int, default=200, help="training images (default 200)")
    parser.add_argument("--num_val", type=int, default=50, help="validation images (default 50)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every model (default 10)")
    parser.add_argument("--min_side", type=int, default=480, help="training and inference size (default 480)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="models to train")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the data and the checkpoints a previous run left in --work_dir")
    parser.add_argument("--workers", type=int, default=1, help="data loader processes (default 1)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="train.py --seed of each training run: every model is trained once per seed and "
                             "scored per seed and as the mean (default 0; one 10-epoch run moves MR^-2 by a few "
                             "points from seed to seed)")
    return parser


def make_data(args, work: Path) -> Path:
    data = work / "data"
    if not (args.reuse and (data / "annotation_val.odgt").is_file()):
        run_step(["tools/make_synthetic_crowdhuman.py", "--output_dir", str(data), "--crowd", "dense",
                  "--seed", str(SEED), "--num_train", str(args.num_train), "--num_val", str(args.num_val)],
                 work / "data.log")
    for body in ("full", "visible"):
        run_step(["build_annotations_file.py", "--data_dir", str(data), "--output_dir", str(work / f"csv_{body}"),
                  "--body", body], work / f"convert_{body}.log")
    (work / "classes.csv").write_text("person,0\nhead,1\n")
    return data


def run_name(name: str, seed: int) -> str:
    """A training run's folder in --work_dir (seed 0, train.py's default, keeps the model's name)."""
    return name if seed == 0 else f"{name}_seed{seed}"


def train(args, work: Path, data: Path, name: str, seed: int) -> dict:
    """Train one model (unless --reuse finds it); returns {"checkpoint", "train_images_per_second", "seconds"}."""
    out = work / run_name(name, seed)
    checkpoint = out / "last.pt"
    if not (args.reuse and checkpoint.is_file()):
        if name in TRIPLET_MODELS:
            source = ["--dataset", "crowdhuman", "--crowdhuman_path", str(data), "--person_triplets",
                      *TRIPLET_MODELS[name]]
        else:
            body = name.split("_")[1]
            source = ["--dataset", "csv", "--csv_train", str(work / f"csv_{body}" / "train_annotations.csv"),
                      "--csv_classes", str(work / "classes.csv")]
        print(f"training {name} (seed {seed}) ...", flush=True)
        run_step(["train.py", *source, *RECIPE, "--epochs", str(args.epochs), "--min_side", str(args.min_side),
                  "--max_side", str(args.min_side * 4 // 3), "--val_every", str(args.epochs + 1),
                  "--workers", str(args.workers), "--seed", str(seed), "--output_dir", str(out)],
                 work / f"train_{run_name(name, seed)}.log")
    epochs = [json.loads(line) for line in open(out / "metrics.jsonl") if line.strip()]
    seconds = sum(epoch["seconds"] for epoch in epochs)
    images = sum(epoch["images_per_second"] * epoch["seconds"] for epoch in epochs)
    return {"checkpoint": str(checkpoint), "train_images_per_second": images / seconds, "seconds": seconds}


def inference_speeds(checkpoints: dict, dataset, repeats: int = 5, settings: "dict | None" = None) -> dict:
    """Images/s of each model's network and post-processing on one batch of 4 validation images (fp32),
    the models taking turns, best of ``repeats`` each; ``settings``: extra load_model arguments by name."""
    images, _, metas = collate_batch([dataset[index] for index in range(min(4, len(dataset)))])
    sizes, scales = [m["image_size"] for m in metas], [m["scale"] for m in metas]
    settings = settings or {}
    models = {name: load_model(checkpoint, **evaluation_settings(), **settings.get(name, {}))[0]
              for name, checkpoint in checkpoints.items()}
    best = {name: float("inf") for name in models}
    for turn in range(repeats + 1):
        for name, model in models.items():
            start = time.perf_counter()
            model(images, image_sizes=sizes, image_scales=scales)
            if turn:  # the first turn warms up allocations and the anchor cache
                best[name] = min(best[name], time.perf_counter() - start)
    return {name: len(metas) / seconds for name, seconds in best.items()}


def training_speed(checkpoints: dict, dataset, repeats: int = 4) -> dict:
    """Training images/s of each model on the same batch of 4 training images, measured in turns.

    One step: forward, losses, backward and an Adam step at train.py's default precision. The plain
    models get the batch's boxes as they are (people as class 0, heads as class 1, the boxes they
    train on) without the triplets' visible and head boxes.
    The models take turns (best of ``repeats`` each), so load on the machine hits them alike.
    """
    images, targets, _ = collate_batch([dataset[index] for index in range(min(4, len(dataset)))])
    plain_targets = [{key: t[key] for key in ("boxes", "labels", "ignore", "ignore_labels")} for t in targets]
    precision = resolve_precision("auto", torch.device("cpu"))
    runs = {}
    for name, checkpoint in checkpoints.items():
        model, _ = load_model(checkpoint)
        model.train()
        runs[name] = (model, build_optimizer(model, "adam", 1e-4, 0.0), targets if model.person_triplets
                      else plain_targets)
    best = {name: float("inf") for name in runs}
    for turn in range(repeats + 1):
        for name, (model, optimizer, batch_targets) in runs.items():
            start = time.perf_counter()
            with precision.autocast(torch.device("cpu")):
                losses = model(images, batch_targets)
            optimizer.zero_grad(set_to_none=True)
            (losses["classification"] + losses["regression"]).backward()
            optimizer.step()
            if turn:  # the first turn warms up allocations and the anchor cache
                best[name] = min(best[name], time.perf_counter() - start)
    return {name: len(images) / seconds for name, seconds in best.items()}


def detect(checkpoint: str, dataset, args, **settings) -> "tuple[list, int | None]":
    """The checkpoint's detections on ``dataset`` and its head class (a triplet model's, else None)."""
    model, _ = load_model(checkpoint, **evaluation_settings(), **settings)
    detections, _ = predict_dataset(model, dataset, torch.device("cpu"), batch_size=4, workers=args.workers,
                                    description=os.path.basename(os.path.dirname(checkpoint)))
    return detections, model.head_class


def score_plain(detections: dict, truth, sizes) -> dict:
    """The plain models' scores: person boxes of the full/visible models, heads of the full model."""
    row = {}
    if "plain_full" in detections:
        full = kind_detections(detections["plain_full"], label=0)
        row["full"] = evaluate_box_kind(full, truth, "full", sizes)
        row["head"] = evaluate_box_kind(kind_detections(detections["plain_full"], label=1), truth, "head", sizes)
        row["overlapped"] = overlapped_recall(full, truth.kinds["full"], sizes)
    if "plain_visible" in detections:
        row["visible"] = evaluate_box_kind(kind_detections(detections["plain_visible"], label=0), truth, "visible",
                                           sizes)
    return row


def format_row(label: str, row: dict, speed: dict) -> str:
    def cell(kind, key, width=7):
        return f"{row[kind][key]:{width}.4f}" if kind in row else " " * (width - 1) + "-"

    return (f"{label:<18}{cell('full', 'ap')}{cell('full', 'mr')}{cell('full', 'ji')}  {cell('visible', 'ap')}"
            f"{cell('visible', 'mr')}  {cell('head', 'ap')}{cell('head', 'mr')}  {cell('person_head', 'ap')}"
            f"{cell('person_head', 'mr')}  {cell('pairs', 'ap')}"
            f"{cell('pairs', 'mr')}  {cell('overlapped', 'overlapped_recall', 8)}{cell('overlapped', 'overlapped_ap')}"
            f"{cell('overlapped', 'overlapped_mr')}  "
            + "".join(f"{speed[key]:6.2f} " if key in speed else "     - " for key in ("train", "infer")))


HEADER = ("model              full body AP  MR^-2     JI  visible AP  MR^-2   head AP  MR^-2  "
          "person's head AP  MR^-2   pairs AP  MR^-2  overlap R     AP  MR^-2  train  infer img/s")


def mean_document(documents: list) -> dict:
    """The mean over seeds of ``metrics_document``s with the same keys."""
    return {kind: {key: float(np.mean([document[kind][key] for document in documents])) for key in values}
            for kind, values in documents[0].items()}


def main(args: argparse.Namespace) -> dict:
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    data = make_data(args, work)
    trained = {(name, seed): train(args, work, data, name, seed) for seed in args.seeds for name in args.models}

    dataset = CrowdHumanDataset(str(data), "val", person_triplets=True,
                                transform=Transform(args.min_side, args.min_side * 4 // 3))
    odgt = str(data / "annotation_val.odgt")
    truth = read_people_ground_truth(odgt)
    if truth.image_ids != [Path(dataset.image_path(i)).stem for i in range(len(dataset))]:
        raise UserError(f"{odgt}: its images and those found in {data} differ")
    sizes = [truth.image_sizes[i] or dataset.image_size(i) for i in range(len(dataset))]

    # Speed: the first seed's models (every seed has the same architecture).
    train_set = CrowdHumanDataset(str(data), "train", person_triplets=True,
                                  transform=Transform(args.min_side, args.min_side * 4 // 3))
    first = args.seeds[0]
    checkpoints = {name: trained[name, first]["checkpoint"] for name in args.models}
    train_speed = training_speed(checkpoints, train_set)
    triplets = [name for name in args.models if name in TRIPLET_MODELS]
    paired = {f"{name}_paired": checkpoints[name] for name in triplets}
    infer_speed = inference_speeds({**checkpoints, **paired}, dataset,
                                   settings={name: {"suppression_box": "paired"} for name in paired})
    speeds = {name: {"train": train_speed[name], "infer": infer_speed[name],
                     "train_run_images_per_second": trained[name, first]["train_images_per_second"]}
              for name in args.models}
    for name in triplets:  # the same network: its training speed is the triplet model's
        speeds[f"{name}_paired"] = {**speeds[name], "infer": infer_speed[f"{name}_paired"]}

    per_seed, suppression = {}, {}
    for seed in args.seeds:
        detections, head_classes, rows = {}, {}, {}
        for name in args.models:
            # a triplet model at the default suppression box, whichever its run was trained with
            settings = {"suppression_box": DEFAULT_SUPPRESSION_BOX} if name in TRIPLET_MODELS else {}
            detections[name], head_classes[name] = detect(trained[name, seed]["checkpoint"], dataset, args, **settings)
        plain = score_plain({k: v for k, v in detections.items() if k not in TRIPLET_MODELS}, truth, sizes)
        if plain:
            rows["plain"] = metrics_document(plain)
        for name in triplets:
            head_class = head_classes[name]
            rows[name] = metrics_document(evaluate_person_triplets(detections[name], truth, sizes, head_class))
            if DEFAULT_SUPPRESSION_BOX != "paired":  # paired suppression of every seed's model too
                found, _ = detect(trained[name, seed]["checkpoint"], dataset, args, suppression_box="paired")
                rows[f"{name}_paired"] = metrics_document(evaluate_person_triplets(found, truth, sizes, head_class))
            if name == "triplet" and seed == first:  # every rule, for the first seed's model (two are rows above)
                for box in SUPPRESSION_BOXES:
                    if box in (DEFAULT_SUPPRESSION_BOX, "paired"):  # a row above
                        suppression[box] = rows["triplet" if box == DEFAULT_SUPPRESSION_BOX else "triplet_paired"]
                        continue
                    found, _ = detect(trained["triplet", seed]["checkpoint"], dataset, args, suppression_box=box)
                    suppression[box] = metrics_document(evaluate_person_triplets(found, truth, sizes, head_class))
        per_seed[seed] = rows
    means = {model: mean_document([per_seed[seed][model] for seed in args.seeds]) for model in per_seed[first]}

    print(f"\n{len(dataset)} validation images, {args.num_train} training images, {args.epochs} epochs, "
          f"{args.min_side} px, seeds {' '.join(map(str, args.seeds))}; {platform.machine()} CPU, "
          f"{torch.get_num_threads()} threads")
    print(HEADER)
    labels = {"plain": ("plain (2 classes)", "plain"),
              "triplet": (f"triplets, {DEFAULT_SUPPRESSION_BOX} NMS", "triplets"),
              "triplet_paired": ("triplets, paired", "paired"),
              "triplet_emd": (f"EMD x2, {DEFAULT_SUPPRESSION_BOX} set", "EMD"),
              "triplet_emd_paired": ("EMD x2, paired set", "EMD paired")}
    for model, (label, short) in labels.items():
        if model not in means:
            continue
        if len(args.seeds) > 1:
            for seed in args.seeds:
                print(format_row(f"{short}, seed {seed}", per_seed[seed][model], {}))
            label = f"{short}, mean"
        print(format_row(label, means[model], speeds.get("plain_full" if model == "plain" else model, {})))
    if suppression:
        print(f"\ntriplet model (seed {first}), NMS (IoU 0.5) on each box and paired:")
        print(HEADER.replace("model             ", "NMS on            "))
        for box, result in suppression.items():
            print(format_row(f"{box} box", result, {}))
    for name in (name for name in labels if name != "plain"):
        if "plain" not in means or name not in means or "plain_full" not in speeds:
            continue
        p, t = means["plain"], means[name]
        mean = " (means over the seeds)" if len(args.seeds) > 1 else ""
        crowd_p, crowd_t = p["overlapped"], t["overlapped"]
        visible = t["visible"]["ap"] - p["visible"]["ap"] if "visible" in p else float("nan")
        print(f"\n{labels[name][0]}: full-body MR^-2 {100 * (p['full']['mr'] - t['full']['mr']):+.1f} points lower "
              f"(target >= 5); overlapped recall "
              f"{100 * (crowd_t['overlapped_recall'] - crowd_p['overlapped_recall']):+.1f} points (target >= 10; "
              f"their MR^-2 {100 * (crowd_p['overlapped_mr'] - crowd_t['overlapped_mr']):+.1f} points lower); "
              f"head AP {t['head']['ap'] - p['head']['ap']:+.4f}, visible AP {visible:+.4f} (targets >= 0){mean}; "
              f"inference {speeds['plain_full']['infer'] / speeds[name]['infer']:.2f}x the plain model's time "
              "(target <= 1.15)")

    summary = {
        "settings": {"num_train": args.num_train, "num_val": len(dataset), "epochs": args.epochs,
                     "min_side": args.min_side, "recipe": RECIPE, "data_seed": SEED, "seeds": args.seeds,
                     "machine": platform.machine(), "threads": torch.get_num_threads()},
        "speed": speeds,
        "scores": means,
        "scores_per_seed": {str(seed): rows for seed, rows in per_seed.items()},
        "triplet_suppression": suppression,
    }
    path = ROOT / "benchmarks" / "results" / "bench_crowd.json"
    write_json(str(path), summary)
    print(f"wrote {path}")
    return summary


if __name__ == "__main__":
    run_cli(main, get_args_parser())
