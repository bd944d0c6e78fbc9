r"""Evaluate RetinaNet on a COCO-format set: the twelve COCO AP/AR numbers and VOC AP per class.

Usage:
    python coco_validation.py --coco_path ./data/COCO2017 \
        --model_path ./weights/coco_resnet_50_map_0_335_state_dict.pt
    python coco_validation.py --coco_path ./data/COCO2017 --detections val_results/detections.jsonl

Reads <coco_path>/annotations/instances_<set_name>.json and the images of <coco_path>/images/<set_name>/
(or <coco_path>/<set_name>/). The model keeps detections scoring above --score_threshold
(default 0.05, as for the published 33.5 AP), at most --max_detections (default 100, the most
COCO's rules score per image). COCO AP/AR come from faster-coco-eval on the annotation file itself;
VOC AP per class at --iou_threshold uses every detection, precision and recall are at
--score_threshold. Saved detections name images by their file_name and can be re-evaluated
with --detections.

Writes into --output_dir (default ./val_results): detections.jsonl (when a model ran),
coco_results.json (the set's image and category ids), metrics.json and
<class>_precision_recall.png per class.
"""
import argparse
import os

from retinanet.cli import resolve_device, run_cli
from retinanet.data import CocoDataset, Transform
from retinanet.errors import UserError
from retinanet.evaluation.detection_files import read_detections
from retinanet.hub import load_model
from retinanet.validation import evaluation_settings
from retinanet.validation_scripts import (
    add_model_arguments,
    check_common_args,
    evaluate_and_report,
    image_names,
    predict_for_validation,
)

# COCO scores at most 100 detections per image.
COCO_MAX_DETECTIONS = 100


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = parser.add_argument_group("ground truth")
    data.add_argument("--coco_path", required=True,
                      help="COCO root holding annotations/ and images/<set_name>/ (or <set_name>/)")
    data.add_argument("--set_name", default="val2017", help="COCO set to evaluate on (default: %(default)s)")
    add_model_arguments(parser)
    metrics = parser.add_argument_group("metrics")
    metrics.add_argument("--iou_threshold", type=float, default=0.5,
                         help="IoU for a VOC true positive (default: %(default)s)")
    metrics.add_argument("--score_threshold", type=float, default=0.05,
                         help="model: keep detections scoring above this; also where VOC precision and "
                              "recall are reported (default: %(default)s)")
    metrics.add_argument("--max_detections", type=int,
                         help=f"model: detections kept per image (default: {COCO_MAX_DETECTIONS})")
    parser.add_argument("--output_dir", default="./val_results",
                        help="where detections, metrics.json and PR curves go (default: %(default)s)")
    return parser


def main(args: argparse.Namespace) -> dict:
    """Evaluate; returns the metrics.json document."""
    check_common_args(args)
    device = resolve_device(args.device) if args.model_path else None
    dataset = CocoDataset(args.coco_path, args.set_name, Transform(args.min_side, args.max_side))
    class_names = dataset.class_names
    if not len(dataset):
        raise UserError(f"{dataset.annotation_file}: no images to evaluate on")
    paths = [dataset.image_path(index) for index in range(len(dataset))]
    # Names relative to the images' folder are the annotation file's file_name values.
    names = image_names(paths, os.path.commonpath([os.path.dirname(path) for path in paths]))

    settings = {
        "ground_truth": dataset.annotation_file,
        "detections": args.detections,
        "model_path": args.model_path,
    }
    if args.model_path:
        max_detections = args.max_detections or COCO_MAX_DETECTIONS
        model, _ = load_model(args.model_path, class_names, args.depth,
                              **evaluation_settings(args.score_threshold, max_detections))
        detections, run_settings = predict_for_validation(model, dataset, device, args, args.score_threshold,
                                                          max_detections)
        settings.update(run_settings)
    else:
        detections = read_detections(args.detections, names, class_names, args.untagged_class)

    return evaluate_and_report(
        detections, dataset, names, args.output_dir,
        iou_threshold=args.iou_threshold, score_threshold=args.score_threshold,
        crowdhuman=False, coco_gt=dataset.coco_ground_truth(),
        coco_image_ids=dataset.image_ids, coco_category_ids=dataset.category_ids,
        save_detections=args.model_path is not None, settings=settings,
    )


if __name__ == "__main__":
    run_cli(main, get_args_parser())
