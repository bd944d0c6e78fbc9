"""What every root script shares: run ``main`` and turn user errors into one line."""
import argparse
import sys
from typing import Callable, Sequence

from retinanet.errors import UserError, user_message


def run_cli(main: Callable[[argparse.Namespace], object], parser: argparse.ArgumentParser) -> None:
    """Parse ``sys.argv`` with ``parser`` and call ``main(args)``.

    A ``UserError`` (bad file, bad checkpoint, bad flag combination) prints
    ``error: <message>`` on stderr and exits with status 2, with no traceback.
    """
    args = parser.parse_args()
    try:
        main(args)
    except UserError as error:
        print(f"error: {user_message(error)}", file=sys.stderr)
        sys.exit(2)


def default_device() -> str:
    """The device a script uses when ``--device`` is not given: CUDA when present."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default=None,
        help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda when available, else cpu)",
    )


def add_model_arguments(parser, required: bool = True) -> None:
    """The flags that name and describe the model, the same in every script that loads one.

    ``--model_path`` (alias ``--model``, the original visualize.py's spelling) and ``--depth``,
    which ``retinanet.hub.load_model`` checks against the checkpoint: one command line
    moves between detect, visualize, export, csv_validation and coco_validation.
    """
    from retinanet.model import RESNET_DEPTHS

    parser.add_argument("--model_path", "--model", dest="model_path", required=required,
                        help="checkpoint: ours, a bare state dict, or the published pytorch-retinanet weights")
    parser.add_argument("--depth", type=int, choices=sorted(RESNET_DEPTHS),
                        help="ResNet depth; checked against the checkpoint (default: read from it)")


def add_suppression_argument(parser, choices=None) -> None:
    """``--suppression_box``: a person-triplet checkpoint's NMS rule for this run (default: the checkpoint's)."""
    from retinanet.model import SUPPRESSION_BOXES

    parser.add_argument("--suppression_box", choices=choices or SUPPRESSION_BOXES, default=None,
                        help="person triplets: what NMS compares instead of the checkpoint's choice: a box, or "
                             "paired (README 'People in crowds')")


def suppression_override(args) -> dict:
    """load_model's keyword for ``--suppression_box``: empty when the flag is not given."""
    return {"suppression_box": args.suppression_box} if getattr(args, "suppression_box", None) else {}


def add_class_list_argument(
    parser, description: str = "class list csv (name,id); default: the names stored in the checkpoint"
) -> None:
    """``--classes`` (alias ``--csv_classes``, the original scripts' spelling): the class list csv."""
    parser.add_argument("--classes", "--csv_classes", dest="classes", default=None, help=description)


def add_precision_arguments(parser, default: str = "auto") -> None:
    """``--precision`` and its alias ``--amp``, the same in every script that runs the model."""
    from retinanet.precision import PRECISIONS

    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="what the network computes in: autocast to bf16 or fp16 (losses, box decoding and "
                             "NMS stay fp32), fp32, or auto: bf16 where the hardware computes it (CPUs with "
                             "AVX512_BF16 or AMX, CUDA devices with bf16), fp32 elsewhere; a type the device has "
                             f"no fast path for runs fp32, saying so (default: {default})")
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision: the same as --precision fp16 on CUDA, --precision bf16 on the CPU")


def resolve_precision_arguments(args, device, default: str = "auto"):
    """``--precision`` / ``--amp`` -> ``retinanet.precision.Precision`` for ``device``; both given and
    disagreeing is a UserError."""
    from retinanet.precision import resolve_precision

    requested = args.precision
    if args.amp:
        meant = "fp16" if device.type == "cuda" else "bf16"
        if requested is not None and requested != meant:
            raise UserError(f"--amp means --precision {meant} on {device.type}; it contradicts --precision {requested}")
        requested = meant
    return resolve_precision(requested or default, device)


def add_inference_arguments(parser, batch_help: str = "images per inference batch") -> None:
    """Flags every script that runs the model shares: batching, loader processes, resize, device, precision."""
    parser.add_argument("--batch_size", type=int, default=4, help=f"{batch_help} (default: %(default)s)")
    parser.add_argument("--workers", "--num_workers", dest="workers", type=int, default=2,
                        help="image decoding processes (default: %(default)s)")
    parser.add_argument("--min_side", type=int, default=608,
                        help="resize the short image side to this (default: %(default)s)")
    parser.add_argument("--max_side", type=int, default=1024,
                        help="cap on the long image side after resizing (default: %(default)s)")
    add_device_argument(parser)
    add_precision_arguments(parser)


def check_counts(args, positive: Sequence[str] = (), non_negative: Sequence[str] = ()) -> None:
    """One-line error for the first flag below 1 (``positive``) or below 0 (``non_negative``).

    Flags left at None (optional, unset) are not checked.
    """
    for flags, minimum, rule in ((positive, 1, "at least 1"), (non_negative, 0, "0 or more")):
        for flag in flags:
            value = getattr(args, flag)
            if value is not None and value < minimum:
                raise UserError(f"--{flag} must be {rule}, got {value}")


def check_inference_arguments(args) -> None:
    """One-line errors for impossible values of the ``add_inference_arguments`` flags."""
    check_counts(args, positive=("batch_size", "min_side", "max_side"), non_negative=("workers",))


def resolve_device(name: "str | None"):
    """``--device`` value -> ``torch.device``; a CUDA device without CUDA is a UserError."""
    import torch

    name = name or default_device()
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UserError(f"--device {name!r} is not a torch device ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; pass --device cpu")
    return device
