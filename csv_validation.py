r"""Evaluate RetinaNet detections on CSV or CrowdHuman data: VOC AP, the CrowdHuman protocol, COCO AP.

Usage:
    python csv_validation.py --csv_classes ./class_names/coco_names_with_head.csv \
        --csv_val ./data/CrowdHuman/valid_annotations.csv --model_path weights/best.pt
    python csv_validation.py --csv_classes ./class_names/coco_names_with_head.csv \
        --csv_val ./data/CrowdHuman/valid_annotations.csv --detections val_results/detections.jsonl
    python csv_validation.py --odgt ./data/CrowdHuman/annotation_val.odgt --crowdhuman_box full \
        --detections crowddet_results.json

Ground truth comes from a CSV annotation file (--csv_val) or straight from a CrowdHuman odgt
file (--odgt, read as the official evaluation reads it; --crowdhuman_box says which box the
detector finds); detections from a model (--model_path) or from a saved file (--detections:
our detections.jsonl or CrowdHuman's official format). In the official format, tag 1 is the
class --crowdhuman_box scores (person, or head), unless --untagged_class says otherwise; the
image sizes come from its records' height and width, and --images_dir (the images, or the
CrowdHuman layout holding them) is needed only for images without them, and for a model run.
Our detections.jsonl names an image by its path relative to the CSV's folder or as the CSV
writes it (relative to --images_dir with --odgt).
The class list is --csv_classes, else the checkpoint's, else person and head.

The model runs once, at score > 0.01 (or --score_threshold when lower) with at most 1000
detections per image (--max_detections), the settings the CrowdHuman protocol needs. From
those detections:
  * VOC AP per class at --iou_threshold over every detection, precision and recall at
    --score_threshold (default 0.05), mAP;
  * CrowdHuman AP, MR^-2 and JI, as the official evaluation code computes them from every
    detection, for the classes named person and head that have ground truth (--no_crowdhuman
    skips them);
  * COCO AP/AR, the twelve numbers, against the same ground truth (ignore regions as iscrowd;
    --no_coco skips them);
  * with --odgt and person-triplet detections (a model trained with --person_triplets, which
    needs no --crowdhuman_box, or a detections.jsonl of one): AP, MR^-2 and JI of the full-body,
    visible-body and head boxes each, AP and MR^-2 of body-head pairs (a detection matches a
    person when its full body and head both reach IoU > 0.5 with that person's), and the recall
    of people whose full body overlaps another's at IoU > 0.5 (in metrics.json: person_triplets).
    A triplet model's head class gives the head scores, as a plain model's head class does; the
    head boxes of its person detections are scored as well (person_head).

Writes into --output_dir (default ./val_results): detections.jsonl (when a model ran),
coco_results.json (image id = image index + 1, category id = class index + 1, the ids of
build_annotations_file.py's JSON), metrics.json and <class>_precision_recall.png per class.
"""
import argparse
import os

from retinanet.cli import (
    add_class_list_argument,
    add_suppression_argument,
    resolve_device,
    run_cli,
    suppression_override,
)
from retinanet.data import CSVDataset, Transform, read_class_list
from retinanet.data.crowdhuman import CROWDHUMAN_CLASSES
from retinanet.errors import UserError
from retinanet.evaluation.coco import coco_ground_truth
from retinanet.evaluation.detection_files import read_detection_file
from retinanet.evaluation.odgt_ground_truth import (
    CROWDHUMAN_BOXES,
    EVALUATED_CLASS,
    find_images,
    read_odgt_ground_truth,
    resolve_image_sizes,
)
from retinanet.evaluation.person_triplets import (
    detected_head_class,
    evaluate_person_triplets,
    format_person_triplets,
    metrics_document,
    read_people_ground_truth,
)
from retinanet.hub import load_model
from retinanet.validation import (
    VOC_IOU_THRESHOLD,
    VOC_SCORE_THRESHOLD,
    dataset_ground_truths,
    evaluation_settings,
)
from retinanet.validation_scripts import (
    CROWDHUMAN_MAX_DETECTIONS,
    CROWDHUMAN_SCORE_THRESHOLD,
    add_model_arguments,
    check_common_args,
    evaluate_and_report,
    image_names,
    odgt_dataset,
    predict_for_validation,
)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = parser.add_argument_group("ground truth")
    data.add_argument("--csv_val", help="annotation CSV (path,x1,y1,x2,y2,class_name) to evaluate on")
    add_class_list_argument(data, "class list CSV (name,id); default: the checkpoint's classes, else person,head")
    data.add_argument("--annotation_delimiter", default=",",
                      help="CSV field delimiter; ' ' reads files of the CrowdHuman fork (default ',')")
    data.add_argument("--odgt", help="CrowdHuman odgt file to read the ground truth from, not --csv_val")
    data.add_argument("--images_dir",
                      help="with --odgt: folder of the <ID>.jpg images, or of the CrowdHuman layout holding "
                           "them (e.g. data/CrowdHuman); needed for a model run, and for the sizes of images "
                           "whose detection records have no height and width")
    data.add_argument("--crowdhuman_box", choices=CROWDHUMAN_BOXES,
                      help="with --odgt: the box the detector finds: full or visible body as 'person' "
                           "(heads too when 'head' is a class), or heads only")
    add_model_arguments(parser)
    add_suppression_argument(parser)
    metrics = parser.add_argument_group("metrics")
    metrics.add_argument("--iou_threshold", type=float, default=VOC_IOU_THRESHOLD,
                         help="IoU for a VOC true positive (default: %(default)s)")
    metrics.add_argument("--score_threshold", type=float, default=VOC_SCORE_THRESHOLD,
                         help="score at which VOC precision and recall are reported; AP uses every detection "
                              "(default: %(default)s)")
    metrics.add_argument("--max_detections", type=int,
                         help=f"model: detections kept per image (default: {CROWDHUMAN_MAX_DETECTIONS})")
    metrics.add_argument("--no_crowdhuman", action="store_true", help="skip the CrowdHuman AP, MR^-2 and JI")
    metrics.add_argument("--no_coco", action="store_true", help="skip the COCO AP/AR numbers")
    parser.add_argument("--output_dir", default="./val_results",
                        help="where detections, metrics.json and PR curves go (default: %(default)s)")
    return parser


def check_args(args: argparse.Namespace) -> None:
    check_common_args(args)
    if bool(args.csv_val) == bool(args.odgt):
        raise UserError("give either --csv_val (CSV annotations) or --odgt (CrowdHuman annotations)")
    if args.odgt and not args.crowdhuman_box and not args.model_path:
        raise UserError("--odgt needs --crowdhuman_box full|visible|head (the box the detector finds)")
    if args.odgt and args.model_path and not args.images_dir:
        raise UserError("--odgt with --model_path needs --images_dir (the images to run the model on)")
    if args.csv_val and (args.images_dir or args.crowdhuman_box):
        raise UserError("--images_dir and --crowdhuman_box only apply with --odgt")


def main(args: argparse.Namespace) -> dict:
    """Evaluate; returns the metrics.json document."""
    check_args(args)
    class_names = read_class_list(args.classes) if args.classes else None
    model = device = None
    # Never above the CrowdHuman protocol's 0.01, nor above the VOC precision/recall threshold.
    model_score_threshold = min(CROWDHUMAN_SCORE_THRESHOLD, args.score_threshold)
    max_detections = args.max_detections or CROWDHUMAN_MAX_DETECTIONS
    if args.model_path:
        device = resolve_device(args.device)
        model, class_names = load_model(args.model_path, class_names, args.depth, **suppression_override(args),
                                        **evaluation_settings(model_score_threshold, max_detections))
    class_names = class_names or list(CROWDHUMAN_CLASSES)
    if args.odgt and not args.crowdhuman_box:
        if not model.person_triplets:
            raise UserError("--odgt needs --crowdhuman_box full|visible|head (the box the detector finds)")
        args.crowdhuman_box = "full"  # a triplet's main box; every kind is scored below

    transform = Transform(args.min_side, args.max_side)
    if args.csv_val:
        dataset = CSVDataset(args.csv_val, class_names, transform, delimiter=args.annotation_delimiter)
        image_paths = [dataset.image_path(index) for index in range(len(dataset))]
        names = image_names(image_paths, os.path.dirname(os.path.abspath(args.csv_val)))
    else:
        truth = read_odgt_ground_truth(args.odgt, class_names, args.crowdhuman_box)
        image_paths = find_images(truth, args.images_dir) if args.images_dir else None
        names = (
            image_names(image_paths, args.images_dir)
            if image_paths
            else [f"{image_id}.jpg" for image_id in truth.image_ids]
        )
    detection_sizes = None
    if args.detections:
        untagged_class = args.untagged_class
        if args.odgt and untagged_class is None:
            untagged_class = EVALUATED_CLASS[args.crowdhuman_box]
        # The paths as the dataset holds them: as the CSV writes them when absolute or found from the
        # current directory, so that a record may name its image either way.
        detections, detection_sizes = read_detection_file(
            args.detections, names, class_names, untagged_class, image_paths
        )
    if args.odgt:
        sizes = resolve_image_sizes(truth, detection_sizes, image_paths)
        dataset = odgt_dataset(truth, sizes, image_paths or names, transform)

    settings = {
        "ground_truth": args.csv_val or args.odgt,
        "class_names": class_names,
        "detections": args.detections,
        "model_path": args.model_path,
    }
    if args.odgt:
        settings.update(images_dir=args.images_dir, crowdhuman_box=args.crowdhuman_box)
    if model is not None and model.person_triplets:
        settings["suppression_box"] = model.suppression_box
    if model is not None:
        detections, run_settings = predict_for_validation(model, dataset, device, args, model_score_threshold,
                                                          max_detections)
        settings.update(run_settings)

    extra_metrics, extra_summary = {}, ""
    if args.odgt and not args.no_crowdhuman and any("head_boxes" in record for record in detections):
        # every box kind, the body-head pairs and the overlapped people (retinanet.evaluation.person_triplets)
        sizes = [dataset.image_size(index) for index in range(len(dataset))]
        # a model says whether it has a head class; a detections file, by having head detections
        head_class = model.head_class if model is not None else detected_head_class(detections, class_names)
        results = evaluate_person_triplets(detections, read_people_ground_truth(args.odgt), sizes,
                                           head_class)
        extra_metrics["person_triplets"] = metrics_document(results)
        extra_summary = format_person_triplets(results)

    coco_gt = None if args.no_coco else coco_ground_truth(dataset_ground_truths(dataset), class_names, names)
    return evaluate_and_report(
        detections, dataset, names, args.output_dir,
        iou_threshold=args.iou_threshold, score_threshold=args.score_threshold,
        crowdhuman=not args.no_crowdhuman, coco_gt=coco_gt,
        coco_image_ids=range(1, len(dataset) + 1), coco_category_ids=range(1, len(class_names) + 1),
        save_detections=model is not None, settings=settings,
        extra_metrics=extra_metrics, extra_summary=extra_summary,
    )


if __name__ == "__main__":
    run_cli(main, get_args_parser())
