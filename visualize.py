r"""Draw ground truth and detections side by side for the first images of a CSV, COCO or CrowdHuman set.

Usage:
    python visualize.py --dataset csv --csv_classes ./class_names/crowdhuman.csv \
        --csv_val ./data/CrowdHuman/valid_annotations.csv --model_path weights/crowdhuman_resnet50.pt
    python visualize.py --dataset coco --coco_path ./data/COCO2017 \
        --model ./weights/coco_resnet_50_map_0_335_state_dict.pt
    python visualize.py --dataset crowdhuman --crowdhuman_path ./data/CrowdHuman --model_path weights/best.pt

Writes one picture per image, ``<output_dir>/<index>_<image name>.jpg``: the ground truth on the
left (boxes coloured by class, ignore regions hatched inside a dashed border), the detections
scoring at least --score_threshold on the right (``class score`` captions). A person-triplet model's
people (and the ground truth of --dataset crowdhuman for it) are drawn with their full-body,
visible-body (thin line) and head boxes in one colour per person. Headless by default;
--show also opens each picture in a window when a display is available.
"""
import argparse
import os

from torch.utils.data import Subset
from tqdm import tqdm

from retinanet.cli import (
    add_class_list_argument,
    add_inference_arguments,
    add_model_arguments,
    check_counts,
    check_inference_arguments,
    resolve_device,
    resolve_precision_arguments,
    run_cli,
)
from retinanet.data import (
    CocoDataset,
    CrowdHumanDataset,
    CSVDataset,
    Transform,
    make_loader,
    read_class_list,
    read_image,
)
from retinanet.data.crowdhuman import BODY_BOX_KEYS, CROWDHUMAN_CLASSES
from retinanet.engine import run_inference
from retinanet.errors import UserError
from retinanet.hub import load_model
from retinanet.visualization import (
    class_colours,
    display_available,
    draw_annotation,
    draw_detections,
    select_detections,
    show_image,
    side_by_side,
    write_image,
)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["csv", "coco", "crowdhuman"], required=True,
                        help="annotation format: csv (--classes, --csv_val), coco (--coco_path) or crowdhuman "
                             "(--crowdhuman_path, its odgt files)")
    parser.add_argument("--crowdhuman_path", help="CrowdHuman root (annotation_val.odgt, CrowdHuman_val/Images)")
    parser.add_argument("--crowdhuman_body", choices=sorted(BODY_BOX_KEYS), default="visible",
                        help="--dataset crowdhuman with a plain model: the ground-truth person box, as "
                             "train.py --crowdhuman_body (default: %(default)s)")
    parser.add_argument("--crowdhuman_split", choices=["train", "val"], default="val",
                        help="CrowdHuman split to draw (default: %(default)s)")
    parser.add_argument("--coco_path", help="COCO root with annotations/ and images/ (or <set_name>/)")
    parser.add_argument("--set_name", default="val2017", help="COCO set to draw (default: %(default)s)")
    parser.add_argument("--csv_val", help="annotation csv of the images to draw, for --dataset csv")
    parser.add_argument("--annotation_delimiter", default=",",
                        help="field separator of --csv_val; ' ' reads the CrowdHuman fork's files "
                             "(default: ',')")
    add_model_arguments(parser)
    add_class_list_argument(parser, "class list csv (name,id) of --csv_val, for --dataset csv")
    parser.add_argument("--num_images", type=int, default=10,
                        help="draw the first this many images of the set (default: %(default)s)")
    parser.add_argument("--output_dir", default="./vis_results",
                        help="where pictures go (default: %(default)s)")
    parser.add_argument("--score_threshold", type=float, default=0.5,
                        help="draw detections scoring at least this (default: %(default)s)")
    parser.add_argument("--show", action="store_true",
                        help="also show each picture in a window (needs a display; files are written anyway)")
    add_inference_arguments(parser)
    return parser


def build_dataset(args: argparse.Namespace, person_triplets: bool = False, class_names=CROWDHUMAN_CLASSES):
    transform = Transform(args.min_side, args.max_side)
    if args.dataset == "crowdhuman":
        if not args.crowdhuman_path:
            raise UserError("--dataset crowdhuman needs --crowdhuman_path")
        if args.classes:
            raise UserError("--classes only applies to --dataset csv; with --dataset crowdhuman the model's "
                            "classes are drawn")
        return CrowdHumanDataset(args.crowdhuman_path, args.crowdhuman_split, person_triplets,
                                 class_names=class_names, body=args.crowdhuman_body, transform=transform)
    if args.dataset == "csv":
        if not args.classes or not args.csv_val:
            raise UserError("--dataset csv needs --classes (or --csv_classes) and --csv_val")
        return CSVDataset(args.csv_val, read_class_list(args.classes), transform,
                          args.annotation_delimiter)
    if not args.coco_path:
        raise UserError("--dataset coco needs --coco_path")
    if args.classes:
        raise UserError("--classes only applies to --dataset csv; a COCO set names its own categories")
    return CocoDataset(args.coco_path, args.set_name, transform)


def picture_name(index: int, image_path: str) -> str:
    """``0003_273271,1a0d6000.jpg``: the index keeps pictures in set order, the stem names the image."""
    return f"{index:04d}_{os.path.splitext(os.path.basename(image_path))[0]}.jpg"


def main(args: argparse.Namespace) -> dict:
    check_counts(args, positive=("num_images",))
    check_inference_arguments(args)
    if args.dataset == "crowdhuman":
        # the model says what to read: people as triplets, or the person and head boxes
        model, class_names = load_model(args.model_path, depth=args.depth, score_threshold=args.score_threshold)
        dataset = build_dataset(args, model.person_triplets, class_names)
    else:
        dataset = build_dataset(args)
        model, class_names = load_model(args.model_path, class_names=dataset.class_names, depth=args.depth,
                                        score_threshold=args.score_threshold)
    device = resolve_device(args.device)
    model = model.to(device)
    precision = resolve_precision_arguments(args, device)
    print(precision.describe())

    count = min(args.num_images, len(dataset))
    loader = make_loader(Subset(dataset, range(count)), batch_size=args.batch_size, workers=args.workers)
    result = run_inference(model, loader, device, num_images=count, precision=precision, description="visualize")

    show = args.show and display_available()
    if args.show and not show:
        print("--show: no display available; pictures are only written to files")
    colours = class_colours(len(class_names))
    written, drawn = [], 0
    for index in tqdm(range(count), desc="drawing", unit="image", dynamic_ncols=True):
        image_path = dataset.image_path(index)
        image = read_image(image_path)
        annotation = dataset.annotations(index)
        detections = select_detections(result["detections"][index], args.score_threshold)
        picture = side_by_side(
            draw_annotation(image, annotation, class_names, colours),
            draw_detections(image, detections, class_names, colours),
            f"ground truth ({len(annotation['boxes'])})",
            f"detections >= {args.score_threshold:g} ({len(detections['scores'])})",
        )
        path = os.path.join(args.output_dir, picture_name(index, image_path))
        write_image(path, picture)
        written.append(path)
        drawn += len(detections["scores"])
        if show and not show_image(picture, os.path.basename(path)):
            print("--show: no interactive matplotlib backend; pictures are only written to files")
            show = False
    print(f"visualize: {count} images, {drawn} detections >= {args.score_threshold:g}, "
          f"{result['images_per_second']:.2f} images/s (inference); pictures in {args.output_dir}")
    return {"pictures": written, "detections": drawn}


if __name__ == "__main__":
    run_cli(main, get_args_parser())
