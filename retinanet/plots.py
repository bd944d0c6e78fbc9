"""Training curves as a picture: loss terms per epoch and, when validated, mAP."""
import os
from typing import Sequence

from retinanet.io_utils import atomic_path


def plot_training_curves(history: Sequence[dict], path: str) -> str:
    """history: per epoch {"epoch", "classification", "regression", "loss", optional "map"} -> PNG at path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with_map = [r for r in history if "map" in r]
    figure = Figure(figsize=(11 if with_map else 6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 2 if with_map else 1, 1)
    epochs = [r["epoch"] for r in history]
    for key, style in (("loss", "-"), ("classification", "--"), ("regression", ":")):
        axes.plot(epochs, [r[key] for r in history], style, marker="o", markersize=3, label=key)
    axes.set(xlabel="epoch", ylabel="loss", title="training loss")
    axes.grid(alpha=0.3)
    axes.legend()
    if with_map:
        map_axes = figure.add_subplot(1, 2, 2)
        map_axes.plot([r["epoch"] for r in with_map], [r["map"] for r in with_map], marker="o", label="mAP")
        for name in with_map[-1].get("ap", {}):
            map_axes.plot([r["epoch"] for r in with_map], [r["ap"].get(name, 0.0) for r in with_map],
                          "--", marker=".", label=f"AP {name}")
        map_axes.set(xlabel="epoch", ylabel="AP@0.5", title="validation", ylim=(0, 1))
        map_axes.grid(alpha=0.3)
        map_axes.legend()
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path
