"""What every root script shares: run ``main`` and turn user errors into one line."""
import argparse
import sys
from typing import Callable

from retinanet.errors import UserError


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


def user_message(error: UserError) -> str:
    """The one-line message, also when a DataLoader worker re-raised it with its traceback attached."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        prefix = f"{type(error).__module__}.{type(error).__name__}: "
        text = last[len(prefix):] if last.startswith(prefix) else last
    return text


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
