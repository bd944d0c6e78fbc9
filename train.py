r"""Train or fine-tune RetinaNet on CSV or COCO data, on one process or many (torchrun).

Usage:
    python train.py --dataset csv --csv_classes class_names/crowdhuman.csv \
        --csv_train data/CrowdHuman/train_annotations.csv --csv_val data/CrowdHuman/valid_annotations.csv --depth 50
    python train.py --dataset coco --coco_path data/COCO2017 --depth 50
    python train.py --dataset crowdhuman --crowdhuman_path data/CrowdHuman --person_triplets  # one box set per person
    python train.py ... --model_path weights/coco_resnet_50_map_0_335_state_dict.pt   # fine-tune, classes by name
    python train.py ... --resume weights/last.pt                                        # continue exactly
    python train.py ... --resume weights/last.pt --epochs 150                           # go on to 150 epochs
    torchrun --nproc_per_node=4 train.py ...                                           # multi-GPU (DDP)
"""
import argparse
import json
import os
import signal
import time

import torch

from retinanet.checkpoint import (
    CHECKPOINT_FORMAT,
    load_optimizer_state,
    previous_checkpoint_paths,
    read_checkpoint_file,
    save_checkpoint,
    unwrap_model,
)
from retinanet.cli import (
    add_device_argument,
    add_precision_arguments,
    check_counts,
    resolve_device,
    resolve_precision_arguments,
    run_cli,
)
from retinanet.data import (
    AspectRatioBatchSampler,
    CocoDataset,
    CrowdHumanDataset,
    CSVDataset,
    Transform,
    make_loader,
)
from retinanet.data.crowdhuman import BODY_BOX_KEYS, CROWDHUMAN_CLASSES, SPLITS
from retinanet.distributed import DEFAULT_TIMEOUT_MINUTES, all_true, init_distributed, process_device, shutdown
from retinanet.engine import BatchLoadError, train_one_epoch
from retinanet.errors import UserError
from retinanet.io_utils import atomic_open, remove_stale_temporaries
from retinanet.model import (
    DEFAULT_SUPPRESSION_BOX,
    INSTANCES_PER_ANCHOR,
    RESNET_DEPTHS,
    SUPPRESSION_BOXES,
    build_retinanet,
)
from retinanet.plots import plot_training_curves
from retinanet.state_dicts import load_weights
from retinanet.training import (
    LRSchedule,
    SeededSamples,
    SkipBatches,
    build_optimizer,
    build_scheduler,
    capped_warmup,
    capture_rng_state,
    refresh_lr,
    restore_rng_state,
    seed_everything,
)
from retinanet.validation import format_validation, validate

# Training's default --precision. bf16 learned as well as fp32 on the learning benchmark
# (benchmarks/bench_learning.py, recommended recipe: person/head AP@0.5 0.959/0.997 against
# 0.960/0.997) in 55% of the CPU time, so auto trains in bf16 wherever the hardware has it.
TRAIN_PRECISION = "auto"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", required=True, choices=["csv", "coco", "crowdhuman"],
                      help="dataset format; crowdhuman reads the odgt files of --crowdhuman_path")
    data.add_argument("--coco_path", help="COCO root (annotations/, images/train2017 or train2017/)")
    data.add_argument("--crowdhuman_path",
                      help="CrowdHuman root (annotation_train.odgt, annotation_val.odgt, CrowdHuman_*/Images)")
    data.add_argument("--crowdhuman_body", choices=sorted(BODY_BOX_KEYS), default="visible",
                      help="--dataset crowdhuman without --person_triplets: the person box, as "
                           "build_annotations_file.py --body (default visible)")
    data.add_argument("--csv_train", help="training annotations CSV (path,x1,y1,x2,y2,class)")
    data.add_argument("--csv_classes", help="class list CSV (name,id)")
    data.add_argument("--csv_val", help="validation annotations CSV (optional)")
    data.add_argument("--annotation_delimiter", default=",",
                      help="CSV field delimiter; ' ' reads files of the CrowdHuman fork (default ',')")
    data.add_argument("--min_side", type=int, default=608, help="resize: shorter image side (default 608)")
    data.add_argument("--max_side", type=int, default=1024, help="resize: cap on the longer side (default 1024)")
    data.add_argument("--flip_prob", type=float, default=0.5, help="horizontal flip probability (default 0.5)")
    data.add_argument("--workers", type=int, default=2, help="data loader processes (default 2)")

    model = parser.add_argument_group("model")
    model.add_argument("--depth", type=int, default=50, choices=sorted(RESNET_DEPTHS), help="ResNet depth")
    model.add_argument("--feature_size", type=int, default=256,
                       help="FPN/head channels (default 256, the published model's; smaller trains faster)")
    model.add_argument("--person_triplets", action="store_true",
                       help="one detection per person with its full-body, visible-body and head boxes, plus "
                            "heads as a class of their own that each person takes its head from "
                            "(--dataset crowdhuman); stored in the checkpoint")
    model.add_argument("--suppression_box", choices=SUPPRESSION_BOXES, default=DEFAULT_SUPPRESSION_BOX,
                       help="person triplets: the box NMS compares, or paired: people whose full bodies overlap "
                            "stay apart when their heads and visible bodies do (default %(default)s; see README "
                            "'People in crowds'); stored in the checkpoint")
    model.add_argument("--instances_per_anchor", type=int, choices=INSTANCES_PER_ANCHOR, default=1,
                       help="person triplets: predictions per anchor; 2 = the two people an anchor overlaps most, "
                            "trained with the EMD loss and kept apart by Set NMS (CrowdDet; see README 'People in "
                            "crowds'); stored in the checkpoint (default %(default)s)")
    model.add_argument("--model_path", help="start from these weights (any checkpoint this toolkit reads); "
                                            "classes are matched by name, new classes start from the prior")
    model.add_argument("--backbone_weights", help="ImageNet ResNet weights file for the backbone")
    model.add_argument("--no_pretrained", action="store_true",
                       help="train the backbone from scratch instead of ImageNet weights")
    model.add_argument("--freeze_bn", choices=["auto", "on", "off"], default="auto",
                       help="freeze backbone BatchNorm; auto: on when the backbone starts from trained weights")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, default=100, help="number of epochs (default 100)")
    optim.add_argument("--start_epoch", type=int, default=0, help="epoch number to start counting from")
    optim.add_argument("--batch_size", type=int, default=2, help="images per batch per process (default 2)")
    optim.add_argument("--optimizer", choices=["adam", "sgd"], default="adam", help="adam (original) or sgd")
    optim.add_argument("--lr", type=float, help="learning rate (default 1e-5 for adam, 0.01 for sgd)")
    optim.add_argument("--weight_decay", type=float, help="weight decay (default 0 for adam, 1e-4 for sgd)")
    optim.add_argument("--lr_schedule", choices=["plateau", "cosine", "step", "constant"], default="plateau",
                       help="LR decay after warm-up; plateau (the original's ReduceLROnPlateau): x --lr_gamma "
                            "after --lr_patience epochs without a lower training loss (default plateau)")
    optim.add_argument("--lr_steps", type=int, nargs="*", default=[],
                       help="epochs at which the step schedule multiplies the LR by --lr_gamma")
    optim.add_argument("--lr_gamma", type=float, default=0.1, help="step and plateau schedule factor (default 0.1)")
    optim.add_argument("--lr_patience", type=int, default=3,
                       help="plateau schedule: epochs without a lower loss before the LR drops (default 3)")
    optim.add_argument("--warmup_iters", type=int, default=500,
                       help="linear warm-up iterations, at most the first epoch's (as in torchvision's detection "
                            "references), so a short fine-tune still reaches --lr (default 500)")
    optim.add_argument("--warmup_factor", type=float, default=0.001, help="LR factor at the first step")
    optim.add_argument("--clip_grad_norm", type=float, default=0.1,
                       help="clip the gradient norm to this (original: 0.1; 0 turns clipping off)")
    add_precision_arguments(optim, default=TRAIN_PRECISION)
    optim.add_argument("--max_nonfinite_steps", type=int, default=5,
                       help="stop after this many non-finite losses in a row (default 5)")

    run = parser.add_argument_group("run")
    add_device_argument(run)
    run.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    run.add_argument("--output_dir", default="./weights", help="checkpoints, metrics and curves (default ./weights)")
    run.add_argument("--resume", help="continue a run from its checkpoint (e.g. weights/last.pt); the LR schedule "
                                      "follows the current flags (--epochs, --lr, --lr_schedule, ...) from the "
                                      "checkpoint's iteration")
    run.add_argument("--save_every", type=int, default=0, help="also write last.pt every N iterations (0: off)")
    run.add_argument("--keep_checkpoints", type=int, default=2,
                     help="last.pt and the checkpoints written before it that stay on disk (last.prev.pt, "
                          "last.prev2.pt, ...), so a damaged last.pt costs one interval (default 2)")
    run.add_argument("--val_every", type=int, default=1, help="validate every N epochs (default 1)")
    run.add_argument("--val_batch_size", type=int, default=4, help="validation batch size (default 4)")
    run.add_argument("--dist_timeout", type=float, default=DEFAULT_TIMEOUT_MINUTES,
                     help="torchrun: minutes a process waits for the others at a collective (e.g. while the first "
                          "one scores the validation set) before the run fails (default %(default)g; NCCL's own "
                          "default is 10)")
    return parser


def check_args(args: argparse.Namespace) -> None:
    if args.dataset == "coco" and not args.coco_path:
        raise UserError("--dataset coco needs --coco_path")
    if args.dataset == "csv" and not (args.csv_train and args.csv_classes):
        raise UserError("--dataset csv needs --csv_train and --csv_classes")
    if args.dataset == "crowdhuman" and not args.crowdhuman_path:
        raise UserError("--dataset crowdhuman needs --crowdhuman_path")
    if args.person_triplets and args.dataset != "crowdhuman":
        raise UserError("--person_triplets trains from CrowdHuman's fbox/vbox/hbox: give --dataset crowdhuman "
                        "--crowdhuman_path DIR")
    if args.instances_per_anchor > 1 and not args.person_triplets:
        raise UserError(f"--instances_per_anchor {args.instances_per_anchor} is a person-triplet model's: "
                        "add --person_triplets")
    check_counts(args, positive=("epochs", "batch_size", "min_side", "max_side", "val_every", "val_batch_size",
                                 "keep_checkpoints"),
                 non_negative=("workers", "warmup_iters", "lr_patience"))
    if args.dist_timeout <= 0:
        raise UserError(f"--dist_timeout must be positive, got {args.dist_timeout:g}")
    for flag in ("model_path", "resume", "backbone_weights"):
        path = getattr(args, flag)
        if path and not os.path.isfile(path):
            raise UserError(f"--{flag} {path}: file not found")
    if args.lr is None:
        args.lr = 1e-5 if args.optimizer == "adam" else 0.01
    if args.weight_decay is None:
        args.weight_decay = 0.0 if args.optimizer == "adam" else 1e-4


def build_datasets(args):
    train_transform = Transform(args.min_side, args.max_side, flip_prob=args.flip_prob)
    val_transform = Transform(args.min_side, args.max_side)
    if args.dataset == "coco":
        train = CocoDataset(args.coco_path, "train2017", train_transform)
        val = CocoDataset(args.coco_path, "val2017", val_transform)
    elif args.dataset == "crowdhuman":
        def split(name, transform):
            return CrowdHumanDataset(args.crowdhuman_path, name, args.person_triplets, CROWDHUMAN_CLASSES,
                                     args.crowdhuman_body, transform)
        train = split("train", train_transform)
        val = None
        if os.path.isfile(os.path.join(args.crowdhuman_path, SPLITS["val"].odgt)):
            val = split("val", val_transform)
    else:
        train = CSVDataset(args.csv_train, args.csv_classes, train_transform, delimiter=args.annotation_delimiter)
        val = None
        if args.csv_val:
            val = CSVDataset(args.csv_val, train.class_names, val_transform, delimiter=args.annotation_delimiter)
    return train, val


class StopRequest:
    """Ctrl-C / SIGTERM ask the loop to stop after the current step, save, and exit cleanly."""

    def __init__(self):
        self.requested = False
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: stopping after this step and saving a checkpoint")

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def main(args: argparse.Namespace) -> dict:
    check_args(args)
    context = init_distributed(args.device, args.dist_timeout)
    try:
        return train(args, context)
    finally:
        shutdown(context)


def train(args: argparse.Namespace, context) -> dict:
    device = resolve_device(process_device(context, args.device))
    log = print if context.is_main else (lambda *a, **k: None)
    seed_everything(args.seed)

    # Data
    train_set, val_set = build_datasets(args)
    class_names = train_set.class_names
    samples = SeededSamples(train_set, args.seed)
    batch_sampler = AspectRatioBatchSampler(train_set, args.batch_size, shuffle=True, drop_last=False,
                                            seed=args.seed, num_replicas=context.world_size, rank=context.rank)
    iterations_per_epoch = len(batch_sampler)

    # Model
    resume = read_resume_checkpoint(args.resume) if args.resume else None
    starts_trained = bool(args.model_path or args.backbone_weights or not args.no_pretrained)
    freeze_bn = starts_trained if args.freeze_bn == "auto" else args.freeze_bn == "on"
    if resume is not None:
        check_resumable(args.resume, resume, args, class_names, context.world_size)
        # the optimizer state expects the same trainable parameters
        freeze_bn = bool(resume.get("freeze_bn", freeze_bn))
    pretrained_backbone = not (args.no_pretrained or args.model_path or resume)
    model = build_retinanet(len(class_names), args.depth, pretrained=pretrained_backbone,
                            backbone_weights=args.backbone_weights if pretrained_backbone else None,
                            feature_size=args.feature_size, freeze_bn=freeze_bn,
                            person_triplets=args.person_triplets, suppression_box=args.suppression_box,
                            instances_per_anchor=args.instances_per_anchor)
    if args.model_path and not resume:
        load_weights(model, args.model_path, class_names, allow_class_change=True, log=log)
    model.to(device)

    optimizer = build_optimizer(model, args.optimizer, args.lr, args.weight_decay)
    warmup_iterations = capped_warmup(args.warmup_iters, iterations_per_epoch)
    schedule = LRSchedule(args.epochs * iterations_per_epoch, warmup_iterations, args.warmup_factor,
                          args.lr_schedule, [e * iterations_per_epoch for e in args.lr_steps], args.lr_gamma,
                          args.lr_patience)
    precision = resolve_precision_arguments(args, device, default=TRAIN_PRECISION)
    log(precision.describe() + (", with a gradient scaler" if precision.dtype == torch.float16 else ""))
    scaler = torch.amp.GradScaler(device.type, enabled=precision.dtype == torch.float16)

    epoch, batches_done, iteration, best_map, history = args.start_epoch, 0, 0, -1.0, []
    # Loss sums of the epoch's steps so far: an epoch resumed in its middle still reports (and the
    # plateau schedule still sees) the mean over all of its steps.
    epoch_sums = {"classification": 0.0, "regression": 0.0, "steps": 0}
    if resume is not None:
        epoch, batches_done, iteration, best_map, history = restore_training_state(
            resume, model, optimizer, scaler, args.weight_decay)
        if batches_done:
            epoch_sums.update(resume.get("epoch_sums", {}))
        log(f"resumed {args.resume}: epoch {epoch}, {batches_done} batches of it done, iteration {iteration}")
        for flag in ("lr", "weight_decay"):
            if resume["args"][flag] != getattr(args, flag):
                log(f"--{flag} {getattr(args, flag):g} applies from iteration {iteration} "
                    f"(the checkpoint's run had {resume['args'][flag]:g})")
    schedule.set_epoch_losses([record["loss"] for record in history])
    scheduler = build_scheduler(optimizer, schedule, args.lr, iteration)
    capped = ""
    if warmup_iterations < args.warmup_iters:
        capped = f" (--warmup_iters {args.warmup_iters} capped at the first epoch)"
    log(f"LR schedule: {schedule.describe(args.lr)}{capped}; {args.epochs} epochs of {iterations_per_epoch} "
        f"iterations; {args.optimizer}, weight decay {args.weight_decay:g}")
    if context.enabled:
        device_ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    log("settings: " + ", ".join(f"{k}={v}" for k, v in sorted(vars(args).items())))
    log(f"{len(train_set)} training images, {len(val_set) if val_set else 0} validation images, classes: "
        f"{', '.join(class_names)}; ResNet-{args.depth} on {device}, {context.world_size} process(es); "
        f"backbone BatchNorm {'frozen' if freeze_bn else 'trained'}")
    os.makedirs(args.output_dir, exist_ok=True)
    last_path = os.path.join(args.output_dir, "last.pt")
    best_path = os.path.join(args.output_dir, "best.pt")
    if context.is_main:
        # a run killed while it wrote a checkpoint leaves the temporary file; the checkpoint itself is whole
        for written in (last_path, best_path, *previous_checkpoint_paths(last_path, args.keep_checkpoints - 1)):
            for stale in remove_stale_temporaries(written):
                log(f"removed {stale}, left by a run killed while it wrote {written}")

    def checkpoint(epoch_now: int, batches: int, metrics: dict) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": unwrap_model(model).state_dict(),
            "class_names": list(class_names),
            "model_args": unwrap_model(model).model_args(),
            "freeze_bn": freeze_bn,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch_now,
            "batches_done": batches,
            "world_size": context.world_size,
            "iteration": scheduler.last_epoch,
            "best_map": best_map,
            "history": history,
            "epoch_sums": dict(epoch_sums),
            "metrics": metrics,
            "args": {k: v for k, v in vars(args).items()},
            "rng": capture_rng_state(),
        }

    def save_last(epoch_now: int, batches: int, metrics: dict) -> None:
        save_checkpoint(last_path, checkpoint(epoch_now, batches, metrics), keep=args.keep_checkpoints)

    def stop_agreed() -> bool:
        # A signal to any one process stops them all at the same point, or the next collective hangs.
        return not all_true(not stop.requested, device, context)

    first_epoch = epoch
    with StopRequest() as stop:
        while epoch < args.epochs and not stop_agreed():
            samples.set_epoch(epoch)
            batch_sampler.set_epoch(epoch)
            loader = make_loader(samples, batch_sampler=SkipBatches(batch_sampler, batches_done), workers=args.workers,
                                 pin_memory=device.type == "cuda")

            def on_step(record, epoch=epoch, done_before=batches_done):
                if args.save_every and context.is_main and scheduler.last_epoch % args.save_every == 0:
                    save_last(epoch, done_before + record["batches"], record)
                return stop_agreed()

            start = time.perf_counter()
            try:
                summary = train_one_epoch(model, loader, optimizer, scheduler, scaler, device, context,
                                          precision=precision, clip_grad_norm=args.clip_grad_norm,
                                          max_nonfinite_steps=args.max_nonfinite_steps, on_step=on_step,
                                          description=f"epoch {epoch + 1}/{args.epochs}", epoch_sums=epoch_sums)
            except BatchLoadError as error:
                # The steps before the bad batch are kept: once the image is fixed, --resume goes on from there.
                batches_done += error.batches
                if context.is_main:
                    save_last(epoch, batches_done, {})
                raise UserError(f"{error}; saved {last_path} at epoch {epoch + 1}, batch {batches_done}/"
                                f"{iterations_per_epoch}: fix or replace the image, then continue with "
                                f"--resume {last_path}") from None
            batches_done += summary["batches"]
            if batches_done < iterations_per_epoch:  # interrupted inside the epoch
                if context.is_main:
                    save_last(epoch, batches_done, summary)
                    log(f"stopped at epoch {epoch + 1}, batch {batches_done}/{iterations_per_epoch}; "
                        f"saved {last_path}; continue with --resume {last_path}")
                break

            epoch += 1
            batches_done = 0
            epoch_sums.update(classification=0.0, regression=0.0, steps=0)
            record = {"epoch": epoch, "loss": summary["loss"], "classification": summary["classification"],
                      "regression": summary["regression"], "lr": optimizer.param_groups[0]["lr"],
                      "skipped_steps": summary["skipped"], "images_per_second": summary["images_per_second"],
                      "seconds": time.perf_counter() - start}
            if val_set is not None and (epoch % args.val_every == 0 or epoch == args.epochs):
                # Every process infers its share; the first scores them (the others get None).
                result = validate(unwrap_model(model), val_set, device, args.val_batch_size, args.workers,
                                  precision=precision, description=f"validate epoch {epoch}", context=context)
                if result is not None:
                    record["map"] = result["map"]
                    record["ap"] = {name: c["ap"] for name, c in result["per_class"].items()}
                    log(format_validation(result))
            history.append(record)
            schedule.set_epoch_losses([r["loss"] for r in history])
            refresh_lr(scheduler)
            log(f"epoch {epoch}/{args.epochs}: loss {record['loss']:.4f} (cls {record['classification']:.4f}, "
                f"reg {record['regression']:.4f}), {record['images_per_second']:.1f} img/s, "
                f"{record['seconds']:.0f} s" + (f", mAP {record['map']:.4f}" if "map" in record else ""))
            if context.is_main:
                improved = "map" in record and record["map"] > best_map
                if improved:
                    best_map = record["map"]
                save_last(epoch, 0, record)
                if improved:
                    save_checkpoint(best_path, checkpoint(epoch, 0, record))
                write_history(args.output_dir, history)
    if context.is_main and epoch >= args.epochs:
        best = f", best mAP {best_map:.4f} in {best_path}" if best_map >= 0 else ""
        log(f"done: {epoch} epochs; last checkpoint {last_path}{best}; metrics and curves in {args.output_dir}")
    elif context.is_main and batches_done == 0:  # stopped between two epochs
        if epoch == first_epoch:  # before this run finished an epoch (and wrote last.pt at its end)
            save_last(epoch, 0, history[-1] if history else {})
        log(f"stopped after epoch {epoch}; saved {last_path}; continue with --resume {last_path}")
    return {"epoch": epoch, "history": history, "best_map": best_map, "model": unwrap_model(model)}


def read_resume_checkpoint(path: str) -> dict:
    """The --resume checkpoint; a damaged one is a one-line error that names the previous one kept beside it."""
    try:
        return read_checkpoint_file(path)
    except UserError as error:
        # rotation makes last.prev.pt before any older one
        (previous,) = previous_checkpoint_paths(path, 1)
        advice = (f"continue from the checkpoint before it with --resume {previous}" if os.path.isfile(previous) else
                  "continue from an earlier checkpoint, or start again without --resume")
        raise UserError(f"--resume {error}; {advice}") from None


def check_resumable(path: str, resume, args: argparse.Namespace, class_names, world_size: int) -> None:
    """One-line UserError when ``resume`` is not a checkpoint of this script that the flags can continue.

    The LR schedule, --lr, --weight_decay and --epochs may change; the model, the class list, the
    optimizer and which parameters train may not: the optimizer state belongs to them.
    """
    if not isinstance(resume, dict) or resume.get("format") != CHECKPOINT_FORMAT or "optimizer" not in resume:
        raise UserError(f"--resume {path}: not a training checkpoint of train.py (use --model_path to start "
                        "from plain weights)")
    restart = "or start a new run from its weights with --model_path"
    if bool(resume["model_args"].get("person_triplets")) != args.person_triplets:
        was = "with" if resume["model_args"].get("person_triplets") else "without"
        raise UserError(f"--resume {path}: trained {was} --person_triplets (resume {was} it, {restart})")
    instances = resume["model_args"].get("instances_per_anchor", 1)
    if instances != args.instances_per_anchor:
        raise UserError(f"--resume {path}: trained with --instances_per_anchor {instances} (resume with it, "
                        f"{restart})")
    if list(resume["class_names"]) != list(class_names):
        raise UserError(f"--resume {path}: trained on classes {resume['class_names']}, the class list has "
                        f"{list(class_names)} ({restart})")
    trained = resume["args"]
    for flag in ("depth", "feature_size"):
        if resume["model_args"][flag] != getattr(args, flag):
            raise UserError(f"--resume {path}: trained with --{flag} {resume['model_args'][flag]}, the flags say "
                            f"--{flag} {getattr(args, flag)} (resume with --{flag} {resume['model_args'][flag]}, "
                            f"{restart})")
    if trained["optimizer"] != args.optimizer:
        raise UserError(f"--resume {path}: its {trained['optimizer']} state cannot continue as --optimizer "
                        f"{args.optimizer} (resume with --optimizer {trained['optimizer']}, {restart})")
    frozen = resume.get("freeze_bn")
    if frozen is not None and args.freeze_bn != "auto" and (args.freeze_bn == "on") != frozen:
        raise UserError(f"--resume {path}: trained with backbone BatchNorm {'frozen' if frozen else 'trained'}, "
                        f"--freeze_bn {args.freeze_bn} would change which parameters train (resume with "
                        f"--freeze_bn auto, {restart})")
    # batches_done counts batches of the sampler this batch size and process count deal out
    stopped_with = (trained["batch_size"], resume.get("world_size", 1))
    if resume["batches_done"] and stopped_with != (args.batch_size, world_size):
        raise UserError(f"--resume {path}: stopped inside an epoch at --batch_size {stopped_with[0]} on "
                        f"{stopped_with[1]} process(es); finish that epoch with the same, or resume from a "
                        "checkpoint written at the end of an epoch")


def restore_training_state(resume: dict, model, optimizer, scaler, weight_decay: float):
    """Load a checkpoint ``check_resumable`` accepted; returns (epoch, batches_done, iteration, best_map, history).

    The param groups take ``weight_decay`` (the current flag's); their LR is set by ``build_scheduler``.
    """
    model.load_state_dict(resume["model"])
    load_optimizer_state(optimizer, resume["optimizer"])  # the moments laid out like the channels-last weights
    for group in optimizer.param_groups:
        group["weight_decay"] = weight_decay
    scaler.load_state_dict(resume["scaler"])
    restore_rng_state(resume["rng"])
    return (resume["epoch"], resume["batches_done"], resume["iteration"], resume["best_map"],
            list(resume["history"]))


def write_history(output_dir: str, history: list) -> None:
    """metrics.jsonl (one line per epoch) and the loss / mAP curves, rewritten whole each epoch."""
    with atomic_open(os.path.join(output_dir, "metrics.jsonl")) as handle:
        for record in history:
            handle.write(json.dumps(record) + "\n")
    plot_training_curves(history, os.path.join(output_dir, "training_curves.png"))


if __name__ == "__main__":
    run_cli(main, get_args_parser())
