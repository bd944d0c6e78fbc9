"""The peers' code the benchmarks run beside ours: the original pytorch-retinanet, from a checkout."""
import importlib
import sys
from pathlib import Path

from retinanet.errors import UserError

ORIGINAL_PATH_ENV = "PYTORCH_RETINANET_PATH"


def import_original(path: str):
    """The original project's ``retinanet.model`` and ``retinanet.dataloader`` modules, from its checkout.

    Both projects name their package ``retinanet``: ours leaves ``sys.modules`` while theirs is
    imported, theirs is then kept under ``original_retinanet.*`` and ours put back. Their modules
    hold references to what they imported, so both stay usable side by side.
    """
    checkout = Path(path)
    if not (checkout / "retinanet" / "model.py").is_file():
        raise UserError(f"{path}: not a pytorch-retinanet checkout (no retinanet/model.py)")

    def ours_or_theirs(name: str) -> bool:
        return name == "retinanet" or name.startswith("retinanet.")

    ours = {name: module for name, module in sys.modules.items() if ours_or_theirs(name)}
    for name in ours:
        del sys.modules[name]
    sys.path.insert(0, str(checkout))
    try:
        model = importlib.import_module("retinanet.model")
        dataloader = importlib.import_module("retinanet.dataloader")
    finally:
        sys.path.remove(str(checkout))
        theirs = {name: sys.modules.pop(name) for name in list(sys.modules) if ours_or_theirs(name)}
        sys.modules.update({f"original_{name}": module for name, module in theirs.items()})
        sys.modules.update(ours)
    return model, dataloader
