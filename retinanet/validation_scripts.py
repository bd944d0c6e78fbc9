"""What csv_validation.py and coco_validation.py share: detections in, every metric and output file out.

``evaluate_and_report`` writes into ``output_dir``, each file atomically:

* ``detections.jsonl``: the detections in our format (only when they did not come from a file);
* ``coco_results.json``: the same detections as COCO results;
* ``metrics.json``: ``build_metrics_json`` of everything computed, with the settings;
* ``<class>_precision_recall.png``: one PR curve per class that has ground truth and detections;

and prints the summary table.

VOC AP is computed from every detection given; precision and recall are then read off each
class's curve at the chosen score threshold. Those are the numbers ``evaluate_voc`` gives with
that threshold: greedy matching in descending score order never lets a lower-scoring
detection change the match of a higher-scoring one.
"""

import argparse
import os
from typing import Mapping, Optional, Sequence, Union

import numpy as np
from tqdm import tqdm

from retinanet import cli
from retinanet.cli import add_inference_arguments, check_counts, check_inference_arguments
from retinanet.data.crowdhuman import BODY_CLASS, HEAD_CLASS
from retinanet.data.dataset import DetectionDataset
from retinanet.data.transforms import Transform
from retinanet.errors import UserError
from retinanet.evaluation.coco import detections_to_coco_results, evaluate_coco, write_detections_as_coco_results
from retinanet.evaluation.crowdhuman import clip_boundary, evaluate_crowdhuman
from retinanet.evaluation.detection_files import write_detections_jsonl
from retinanet.evaluation.odgt_ground_truth import ImageSize, OdgtGroundTruth
from retinanet.evaluation.report import build_metrics_json, format_summary, plot_pr_curves
from retinanet.evaluation.voc import evaluate_voc, voc_at_score_threshold
from retinanet.io_utils import write_json
from retinanet.validation import EVAL_MAX_DETECTIONS, EVAL_SCORE_THRESHOLD, dataset_ground_truths, predict_dataset

# The CrowdHuman protocol scores every detection it is given, as the official code does, so a
# model run for it keeps detections down to 0.01 with no small cap per image (the most crowded
# validation images hold a few hundred people and as many heads): train.py validates the same way.
CROWDHUMAN_SCORE_THRESHOLD = EVAL_SCORE_THRESHOLD
CROWDHUMAN_MAX_DETECTIONS = EVAL_MAX_DETECTIONS


def odgt_dataset(
    truth: OdgtGroundTruth,
    image_sizes: "Sequence[ImageSize]",
    image_paths: "Sequence[str]",
    transform: "Optional[Transform]" = None,
) -> DetectionDataset:
    """The ground truth as a dataset, its boxes clipped the official way to image_sizes (I,) (H, W).

    image_paths (I,): the image files, or, to score saved detections without images, any name
    per image (the dataset can then not be iterated, only asked for annotations and sizes).
    """
    annotations = []
    for annotation, (height, width) in zip(truth.annotations, image_sizes):
        clipped = dict(annotation)
        for key in ("boxes", "ignore"):
            count = len(annotation[key])
            clipped[key] = clip_boundary(annotation[key], np.full(count, height), np.full(count, width))
        annotations.append(clipped)
    return DetectionDataset(
        truth.class_names, list(image_paths), annotations, truth.sources, transform, list(image_sizes)
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags both scripts take for running a checkpoint, or for reading saved detections instead."""
    group = parser.add_argument_group("model (or --detections)")
    cli.add_model_arguments(group, required=False)  # --model_path/--model and --depth, as every script
    add_inference_arguments(group)
    group.add_argument("--detections",
                       help="evaluate saved detections instead of running a model: our detections.jsonl or "
                            "CrowdHuman's official result format (JSON lines with ID and dtboxes)")
    group.add_argument("--untagged_class",
                       help="class of official-format detections whose tag is not a class name (CrowdDet and "
                            "mmdet write tag 1), e.g. person")


def check_common_args(args: argparse.Namespace) -> None:
    """The checks both scripts need; any problem is a one-line UserError."""
    if bool(args.model_path) == bool(args.detections):
        raise UserError("give either --model_path (run a model) or --detections (evaluate saved detections)")
    for path, flag in ((args.model_path, "--model_path"), (args.detections, "--detections")):
        if path and not os.path.isfile(path):
            raise UserError(f"{flag} {path}: file not found")
    if args.untagged_class is not None and not args.detections:
        raise UserError("--untagged_class only applies to --detections files")
    if args.detections and (args.depth is not None or args.max_detections is not None or args.amp
                            or args.precision is not None):
        raise UserError("--depth, --max_detections, --precision and --amp only apply when a model runs "
                        "(--model_path)")
    check_inference_arguments(args)
    check_counts(args, positive=("max_detections",))
    if not 0.0 < args.iou_threshold <= 1.0:
        raise UserError(f"--iou_threshold must be in (0, 1], got {args.iou_threshold}")
    if not 0.0 <= args.score_threshold <= 1.0:
        raise UserError(f"--score_threshold must be in [0, 1], got {args.score_threshold}")


def image_names(paths: Sequence[str], root: str) -> "list[str]":
    """Image paths (I,) -> names relative to ``root``, as detection files record them.

    Two spellings of one file (``a/../b.jpg`` and ``b.jpg``) would share a name: a UserError.
    """
    names = [os.path.relpath(path, root) for path in paths]
    first = {}
    for index, name in enumerate(names):
        if name in first:
            raise UserError(
                f"images {paths[first[name]]!r} and {paths[index]!r} are one file listed twice; list it once"
            )
        first[name] = index
    return names


def crowdhuman_classes(class_names: Sequence[str], ground_truths: Sequence[dict]) -> "dict[str, int]":
    """{name: label} of the CrowdHuman classes (person, head) that have ground-truth boxes."""
    labels = np.concatenate([np.asarray(gt["labels"]).reshape(-1) for gt in ground_truths] or [np.zeros(0)])
    return {
        name: class_names.index(name)
        for name in (BODY_CLASS, HEAD_CLASS)
        if name in class_names and (labels == class_names.index(name)).any()
    }


def predict_for_validation(model, dataset, device, args: argparse.Namespace, score_threshold: float,
                           max_detections: int) -> "tuple[list, dict]":
    """Run ``model`` (loaded with ``score_threshold`` and ``max_detections``) over ``dataset`` on ``device``
    with the scripts' --batch_size, --workers and --precision; prints one line of speed and settings.

    Returns (detections per dataset index, the settings metrics.json records for the run).
    """
    model.to(device)
    precision = cli.resolve_precision_arguments(args, device)
    detections, images_per_second = predict_dataset(
        model, dataset, device, args.batch_size, args.workers, precision, description="validate"
    )
    print(f"ResNet-{model.depth} on {device}, {precision.describe()}: {len(dataset)} images at "
          f"{images_per_second:.1f} images/s, score > {score_threshold:g}, at most {max_detections} detections "
          "per image")
    settings = dict(depth=model.depth, min_side=args.min_side, max_side=args.max_side,
                    model_score_threshold=score_threshold, max_detections=max_detections,
                    topk_per_level=model.topk_per_level,
                    nms_iou_threshold=model.nms_iou_threshold, device=str(device), precision=precision.name,
                    images_per_second=images_per_second)
    return detections, settings


def _with_ground_truth(voc_result: dict) -> dict:
    """voc_result restricted to the classes with annotations (all of them when none has any)."""
    per_class = {label: r for label, r in voc_result["per_class"].items() if r["num_annotations"] > 0}
    return dict(voc_result, per_class=per_class or voc_result["per_class"])


def evaluate_and_report(
    detections: Sequence[dict],
    dataset: DetectionDataset,
    names: Sequence[str],
    output_dir: str,
    *,
    iou_threshold: float,
    score_threshold: float,
    crowdhuman: bool,
    coco_gt: Union[str, os.PathLike, dict, None],
    coco_image_ids: Sequence[int],
    coco_category_ids: Sequence[int],
    save_detections: bool,
    settings: Optional[Mapping[str, object]] = None,
    extra_metrics: Optional[Mapping[str, object]] = None,
    extra_summary: str = "",
) -> dict:
    """Score ``detections`` against ``dataset``, write the outputs (module docstring), print the summary.

    detections: per dataset index {boxes (D, 4) x1y1x2y2 original pixels, scores (D,), labels (D,)};
    dataset: a DetectionDataset (annotations(i), image_size(i), class_names); names: (I,) image
    names for detections.jsonl and the COCO ground truth. crowdhuman: compute AP / MR^-2 / JI for
    person and head (those with ground truth), from every detection given, clipped to
    ``dataset.image_size``. coco_gt: COCO annotation file or dict to score the
    COCO results against, None to skip COCO AP; coco_image_ids (I,), coco_category_ids (K,): the ids
    of the COCO results. extra_metrics: more metrics.json entries (e.g. "person_triplets"), and
    extra_summary the lines printed for them after the summary. Returns the metrics.json document.
    """
    class_names = list(dataset.class_names)
    ground_truths = dataset_ground_truths(dataset)
    voc_all = evaluate_voc(
        detections, ground_truths, len(class_names), iou_threshold, score_threshold=-np.inf
    )
    voc_result = voc_at_score_threshold(voc_all, score_threshold)

    crowdhuman_results = {}
    classes = crowdhuman_classes(class_names, ground_truths) if crowdhuman else {}
    if classes:
        indices = tqdm(range(len(dataset)), desc="image sizes", unit="image")
        sizes = [dataset.image_size(index) for index in indices]
        crowdhuman_results = {
            name: evaluate_crowdhuman(detections, ground_truths, label, sizes) for name, label in classes.items()
        }

    os.makedirs(output_dir, exist_ok=True)
    written = []
    if save_detections:
        path = os.path.join(output_dir, "detections.jsonl")
        write_detections_jsonl(path, detections, names, class_names)
        written.append(path)
    coco_path = os.path.join(output_dir, "coco_results.json")
    written.append(str(write_detections_as_coco_results(coco_path, detections, coco_image_ids, coco_category_ids)))
    coco_result = None
    if coco_gt is not None:  # the COCO libraries hold every result as a Python dict
        coco_result = evaluate_coco(coco_gt, detections_to_coco_results(detections, coco_image_ids, coco_category_ids))

    shown = _with_ground_truth(voc_result)
    # plot_pr_curves cannot draw an empty curve; a class without detections has AP 0 in the table.
    plotted = {label: r for label, r in shown["per_class"].items() if len(r["recall_curve"])}
    plots = plot_pr_curves(dict(shown, per_class=plotted), class_names, output_dir)
    settings = {"voc_ap_detections": "all; precision and recall at score_threshold", **(settings or {})}
    metrics = build_metrics_json(voc_result, class_names, crowdhuman_results or None, coco_result, settings)
    metrics.update(extra_metrics or {})
    metrics_path = os.path.join(output_dir, "metrics.json")
    write_json(metrics_path, metrics)
    written.append(metrics_path)

    print(format_summary(shown, class_names, crowdhuman_results or None, coco_result))
    if extra_summary:
        print(extra_summary)
    hidden = len(voc_result["per_class"]) - len(shown["per_class"])
    if hidden:
        print(f"({hidden} classes without ground truth not shown; metrics.json lists every class)")
    without_boxes = [name for name in (BODY_CLASS, HEAD_CLASS) if name in class_names and name not in classes]
    if crowdhuman and without_boxes:
        print(f"CrowdHuman protocol skipped for {' and '.join(without_boxes)}: no ground-truth boxes")
    print(f"wrote {', '.join(written)} and {len(plots)} PR curve(s) in {output_dir}")
    return metrics
