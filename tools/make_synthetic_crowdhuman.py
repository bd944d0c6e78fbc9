r"""Write a small synthetic CrowdHuman (drawn people, CrowdHuman's folders and odgt format).

Usage:
    python tools/make_synthetic_crowdhuman.py --output_dir data/synthetic_crowdhuman \
        --num_train 200 --num_val 50 --width 320 --height 240 --seed 0
    python build_annotations_file.py --data_dir data/synthetic_crowdhuman
    python tools/make_synthetic_crowdhuman.py --output_dir data/dense_crowdhuman --crowd dense

``--crowd dense`` draws CrowdHuman-like crowds. Per split it prints the people per image and the
pairs of people per image whose full-body and visible-body boxes overlap at IoU > 0.5
(CrowdHuman's training set: 22.6 people, 2.4 full-body pairs).
"""
import argparse
import os
import sys

# Run from a checkout without installing the package: make the repository root importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from retinanet.cli import run_cli  # noqa: E402
from retinanet.evaluation.crowd_overlaps import crowd_statistics, format_crowd_statistics  # noqa: E402
from tools.synthetic_crowdhuman import CROWD_PRESETS, SyntheticConfig, crowd_config, generate_dataset  # noqa: E402

_DEFAULTS = SyntheticConfig()


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_dir", default="data/synthetic_crowdhuman",
                        help="dataset folder to write (default: %(default)s)")
    parser.add_argument("--num_train", type=int, default=200, help="training images (default: %(default)s)")
    parser.add_argument("--num_val", type=int, default=50, help="validation images (default: %(default)s)")
    dense = CROWD_PRESETS["dense"]
    parser.add_argument("--width", type=int, default=None,
                        help=f"image width (default: {_DEFAULTS.width}; dense: {dense['width']})")
    parser.add_argument("--height", type=int, default=None,
                        help=f"image height (default: {_DEFAULTS.height}; dense: {dense['height']})")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same dataset (default: %(default)s)")
    parser.add_argument("--crowd", choices=sorted(CROWD_PRESETS), default="sparse",
                        help="sparse: a few people, partly overlapping; dense: CrowdHuman's crowding, 30-50 "
                             "people drawn, 60%% right behind someone (full bodies overlapping at IoU > 0.5, "
                             "heads apart); the flags below override the preset (default: %(default)s)")
    parser.add_argument("--min_people", type=int, default=None,
                        help=f"fewest people per image (default: {_DEFAULTS.min_people}; dense: "
                             f"{CROWD_PRESETS['dense']['min_people']})")
    parser.add_argument("--max_people", type=int, default=None,
                        help=f"most people per image (default: {_DEFAULTS.max_people}; dense: "
                             f"{CROWD_PRESETS['dense']['max_people']})")
    parser.add_argument("--min_head", type=int, default=_DEFAULTS.min_head,
                        help="smallest head height in pixels; keep >= 28 so 32-pixel anchors can match "
                             "(default: %(default)s)")
    parser.add_argument("--max_head", type=int, default=_DEFAULTS.max_head,
                        help="largest head height in pixels (default: %(default)s)")
    parser.add_argument("--min_body_heads", type=float, default=_DEFAULTS.min_body_heads,
                        help="shortest full body, in head heights (default: %(default)s)")
    parser.add_argument("--max_body_heads", type=float, default=_DEFAULTS.max_body_heads,
                        help="tallest full body, in head heights (default: %(default)s)")
    return parser


def main(args: argparse.Namespace) -> dict:
    config = crowd_config(
        args.crowd, width=args.width, height=args.height, min_people=args.min_people, max_people=args.max_people,
        min_head=args.min_head, max_head=args.max_head, min_body_heads=args.min_body_heads,
        max_body_heads=args.max_body_heads,
    )
    records = generate_dataset(args.output_dir, args.num_train, args.num_val, config, args.seed)
    for split, split_records in records.items():
        people = sum(box["tag"] == "person" for record in split_records for box in record["gtboxes"])
        masks = sum(box["tag"] == "mask" for record in split_records for box in record["gtboxes"])
        print(f"{split}: {len(split_records)} images, {people} people, {masks} mask regions")
        print(format_crowd_statistics(split, crowd_statistics(split_records)))
    print(f"wrote {args.output_dir}; convert with: "
          f"python build_annotations_file.py --data_dir {args.output_dir}")
    return records


if __name__ == "__main__":
    run_cli(main, get_args_parser())
