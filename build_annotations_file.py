"""Convert CrowdHuman odgt annotations to CSV annotation files and COCO-style JSON.

Usage:
    python build_annotations_file.py --dataset crowd_human
    python build_annotations_file.py --data_dir ./data/CrowdHuman --body full --classes person,head

Reads the standard layout in --data_dir (CrowdHuman_train01..03/Images, CrowdHuman_val/Images,
annotation_train.odgt, annotation_val.odgt) and writes train_annotations.csv,
valid_annotations.csv, train.json and val.json into --output_dir. Ignore regions are written
with the class ``__ignore__:<class>`` (CSV) and ``iscrowd=1`` (JSON).
"""
import argparse

from retinanet.cli import run_cli
from retinanet.data.crowdhuman import BODY_BOX_KEYS, CROWDHUMAN_CLASSES, SPLITS, convert_split
from retinanet.errors import UserError
from tools.annotation_writers import summarize, write_split


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset", "--dataset_name", dest="dataset", default="crowd_human", choices=["crowd_human"],
        help="dataset to convert (--dataset_name is the CrowdHuman fork's spelling; default: %(default)s)",
    )
    parser.add_argument(
        "--data_dir", default="./data/CrowdHuman",
        help="folder with the CrowdHuman images and odgt files (default: %(default)s)",
    )
    parser.add_argument(
        "--output_dir", default=None, help="where the CSV and JSON files go (default: --data_dir)"
    )
    parser.add_argument(
        "--body", default="visible", choices=sorted(BODY_BOX_KEYS),
        help="body box written as 'person': visible (vbox, the fork's choice) or full (fbox, may extend "
             "beyond the image and is clipped) (default: %(default)s)",
    )
    parser.add_argument(
        "--classes", default=",".join(CROWDHUMAN_CLASSES),
        help="comma-separated classes to emit, in class-list order (COCO category ids follow it): "
             "person, head or both (default: %(default)s)",
    )
    parser.add_argument(
        "--delimiter", default=",",
        help="CSV field separator; ' ' writes the CrowdHuman fork's space-separated files (default: ',')",
    )
    return parser


def parse_classes(text: str) -> "list[str]":
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CROWDHUMAN_CLASSES]
    if not names or unknown or len(set(names)) != len(names):
        raise UserError(
            f"--classes {text!r}: give {' and/or '.join(CROWDHUMAN_CLASSES)}, each at most once, "
            "comma-separated"
        )
    return names


def main(args: argparse.Namespace) -> dict:
    class_names = parse_classes(args.classes)
    if len(args.delimiter) != 1:
        raise UserError(f"--delimiter must be one character, got {args.delimiter!r}")
    output_dir = args.output_dir or args.data_dir
    # Every split is read and checked before anything is written: a bad val file leaves no new train file.
    results = {
        split_name: convert_split(args.data_dir, split_name, class_names, args.body) for split_name in SPLITS
    }
    for split_name, split in results.items():
        write_split(output_dir, split_name, split, args.delimiter)
        print(summarize(split_name, split))
    print(f"classes (COCO category id = index + 1): {', '.join(class_names)}; written to {output_dir}")
    return results


if __name__ == "__main__":
    run_cli(main, get_args_parser())
