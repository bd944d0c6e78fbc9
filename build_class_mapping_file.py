r"""Build a class-list csv (``name,id``) from a txt file with one class name per line.

Usage:
    python build_class_mapping_file.py --class_names_txt ./class_names/coco_names_with_head.txt \
        --class_names_csv ./class_names/coco_names_with_head.csv
"""
import argparse
import os

from retinanet.cli import run_cli
from retinanet.data.class_list import read_class_names_txt, write_class_list


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "-t", "--class_names_txt", default="./class_names/coco_names_with_head.txt",
        help="input: one class name per line; blank lines and surrounding spaces are ignored "
             "(default: %(default)s)",
    )
    parser.add_argument(
        "-c", "--class_names_csv", default=None,
        help="output class list, 'name,id' per line with ids 0..K-1 in txt order "
             "(default: the txt path with a .csv extension)",
    )
    return parser


def main(args: argparse.Namespace) -> "list[str]":
    names = read_class_names_txt(args.class_names_txt)
    output = args.class_names_csv or os.path.splitext(args.class_names_txt)[0] + ".csv"
    write_class_list(output, names)
    print(f"wrote {len(names)} classes to {output}")
    return names


if __name__ == "__main__":
    run_cli(main, get_args_parser())
