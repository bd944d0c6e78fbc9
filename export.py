r"""Export a RetinaNet checkpoint to ONNX (post-processing included) and check it against PyTorch.

Usage:
    python export.py --model_path weights/crowdhuman_resnet50.pt --output weights/crowdhuman_resnet50.onnx
    python export.py --model_path weights/coco_resnet_50_map_0_335_state_dict.pt --output coco.onnx \
        --torchscript coco.torchscript.pt

The ONNX graph (opset >= 17, dynamic batch, height and width) runs the network, per-level top-k,
box decoding, clipping and class-aware NMS. Inputs: ``images`` (B, 3, H, W) float32, normalised and
padded as the metadata's ``preprocessing`` says, and ``score_threshold`` () float32. Outputs:
``boxes`` (D, 4) x1y1x2y2 in input pixels, ``scores`` (D,), ``labels`` (D,), ``batch_index`` (D,),
grouped by image, best first. Before the file is written, onnxruntime and PyTorch are run on random
inputs of other sizes and batch sizes, and their detections compared (the table is printed); a
mismatch beyond the stated tolerance stops the export.
"""
import argparse
import os

from retinanet.cli import (
    add_class_list_argument,
    add_model_arguments,
    add_suppression_argument,
    run_cli,
    suppression_override,
)
from retinanet.data import read_class_list
from retinanet.errors import UserError
from retinanet.export import (
    ONNX_OPSET,
    check_parity,
    check_sizes,
    export_onnx,
    export_torchscript,
    format_parity_table,
    onnx_runner,
    parity_ok,
    preprocessing_note,
    torchscript_runner,
)
from retinanet.hub import load_model
from retinanet.model import DEFAULT_TOPK_PER_LEVEL, PERSON_BOX_KINDS


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    add_class_list_argument(parser)
    parser.add_argument("--output", default=None,
                        help="ONNX file to write (default: the checkpoint path with .onnx)")
    parser.add_argument("--torchscript", default=None, metavar="PATH",
                        help="also write a traced TorchScript module here (same inputs and outputs)")
    parser.add_argument("--opset", type=int, default=ONNX_OPSET,
                        help="ONNX opset, at least %(default)s (default: %(default)s)")
    parser.add_argument("--sample_size", type=int, nargs=2, default=[320, 320], metavar=("H", "W"),
                        help="tracing input size, multiples of 32; the graph accepts any size "
                             "(default: %(default)s)")
    parser.add_argument("--score_threshold", type=float, default=0.05,
                        help="default of the graph's score_threshold input, recorded in the metadata and "
                             "used by the check (default: %(default)s)")
    parser.add_argument("--nms_iou_threshold", type=float, default=0.5,
                        help="class-aware NMS IoU threshold, fixed in the graph (default: %(default)s)")
    parser.add_argument("--max_detections", type=int, default=300,
                        help="detections kept per image, fixed in the graph (default: %(default)s)")
    add_suppression_argument(parser, PERSON_BOX_KINDS)  # paired suppression is no graph (retinanet.export)
    parser.add_argument("--topk_per_level", type=int, default=DEFAULT_TOPK_PER_LEVEL,
                        help="candidates per pyramid level before NMS, fixed in the graph "
                             "(default: %(default)s)")
    parser.add_argument("--min_side", type=int, default=608,
                        help="short side the inputs should be resized to, recorded in the metadata "
                             "(default: %(default)s)")
    parser.add_argument("--max_side", type=int, default=1024,
                        help="cap on the long side, recorded in the metadata (default: %(default)s)")
    return parser


def make_verifier(model, runner_factory, sample_size, score_threshold: float, name: str, checks: dict):
    """A check of the finished temporary file: print the comparison table, raise on a mismatch.

    The rows are kept in ``checks[name]``.
    """
    def verify(path: str) -> None:
        rows = check_parity(model, runner_factory(path), check_sizes(sample_size), [score_threshold, 0.0])
        checks[name] = rows
        print(format_parity_table(rows, name))
        if not parity_ok(rows):
            raise UserError(f"{name} detections differ from PyTorch beyond the tolerance (table above); "
                            "nothing was written")
        unexplained = sum(row["unmatched_reference"] + row["unmatched_candidate"] for row in rows)
        detections = sum(row["reference"] for row in rows)
        print(f"{name} matches PyTorch: {len(rows)} image/threshold pairs, {detections} detections, "
              f"{unexplained} unmatched")
    return verify


def main(args: argparse.Namespace) -> dict:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise UserError(f"ONNX export needs onnx and onnxruntime ({error.name} is missing): "
                        "pip install -r requirements-export.txt") from None
    if not 0.0 <= args.score_threshold < 1.0:
        raise UserError(f"--score_threshold must be in [0, 1), got {args.score_threshold}")
    output = args.output or os.path.splitext(args.model_path)[0] + ".onnx"
    class_names = read_class_list(args.classes) if args.classes else None
    model, class_names = load_model(
        args.model_path, class_names=class_names, depth=args.depth, score_threshold=args.score_threshold,
        nms_iou_threshold=args.nms_iou_threshold, max_detections=args.max_detections,
        topk_per_level=args.topk_per_level,
        **suppression_override(args),
    )
    sample_size = tuple(args.sample_size)
    print(f"exporting ResNet-{model.depth} RetinaNet ({len(class_names)} classes) to {output}, "
          f"opset {args.opset}")
    checks = {}
    export_onnx(model, output, class_names, sample_size, args.opset,
                preprocessing_note(args.min_side, args.max_side),
                verify=make_verifier(model, onnx_runner, sample_size, args.score_threshold, "onnxruntime",
                                     checks))
    written = [output]
    if args.torchscript:
        export_torchscript(model, args.torchscript, sample_size, verify=make_verifier(
            model, torchscript_runner, sample_size, args.score_threshold, "torchscript", checks))
        written.append(args.torchscript)
    sizes = ", ".join(f"{path} ({os.path.getsize(path) / 2 ** 20:.1f} MiB)" for path in written)
    print(f"wrote {sizes}; inputs images (B, 3, H, W) and score_threshold, dynamic batch/height/width")
    return {"outputs": written, "class_names": class_names, "checks": checks}


if __name__ == "__main__":
    run_cli(main, get_args_parser())
