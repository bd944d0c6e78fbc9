"""What an evaluation hands to people and scripts: a summary table, metrics.json and PR-curve PNGs.

Inputs are the results of ``evaluate_voc`` (required), ``evaluate_crowdhuman`` per class
name (optional) and ``evaluate_coco`` (optional). Plots use matplotlib's Agg canvas
directly, so importing this module changes no global matplotlib state.
"""

import os
import re
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from retinanet.io_utils import atomic_path

PathLike = Union[str, os.PathLike]


def _class_name(class_names: Sequence[str], label: int) -> str:
    return class_names[label] if label < len(class_names) else str(label)


def format_summary(
    voc_result: dict,
    class_names: Sequence[str],
    crowdhuman_results: Optional[Mapping[str, dict]] = None,
    coco_result: Optional[Mapping[str, float]] = None,
) -> str:
    """A plain-text table: per class AP, #annotations, #detections, precision, recall; mAP;
    then CrowdHuman AP / MR^-2 / JI per class and the COCO numbers when given."""
    per_class = voc_result["per_class"]
    width = max([len("class"), len("mAP")] + [len(_class_name(class_names, label)) for label in per_class])
    lines = [
        f"VOC AP at IoU {voc_result['iou_threshold']:.2f}; precision and recall at score >= "
        f"{voc_result['score_threshold']:g} ({voc_result['num_images']} images)",
        f"{'class':<{width}}  {'AP':>7}  {'#annot':>8}  {'#dets':>8}  {'precision':>9}  {'recall':>7}",
    ]
    for label, result in per_class.items():
        name = _class_name(class_names, label)
        lines.append(
            f"{name:<{width}}  {result['ap']:7.4f}  {result['num_annotations']:8d}  "
            f"{result['num_detections']:8d}  {result['precision']:9.4f}  {result['recall']:7.4f}"
        )
    lines.append(f"{'mAP':<{width}}  {voc_result['map']:7.4f}")
    if crowdhuman_results:
        name_width = max([len("class")] + [len(name) for name in crowdhuman_results])
        threshold = next(iter(crowdhuman_results.values()))["score_threshold"]
        scored = "every detection" if threshold is None else f"score >= {threshold:g}"
        lines += [
            "",
            f"CrowdHuman protocol ({scored}, no cap on detections per image)",
            f"{'class':<{name_width}}  {'AP':>7}  {'MR^-2':>7}  {'JI':>7}  {'JI at score >':>13}",
        ]
        for name, result in crowdhuman_results.items():
            lines.append(
                f"{name:<{name_width}}  {result['ap']:7.4f}  {result['mr']:7.4f}  {result['ji']:7.4f}  "
                f"{result['ji_score_threshold']:13.1f}"
            )
    if coco_result:
        lines += ["", "COCO (-1: no ground truth of that kind)"]
        lines += [f"{name:<6} {value:7.4f}" for name, value in coco_result.items()]
    return "\n".join(lines)


def build_metrics_json(
    voc_result: dict,
    class_names: Sequence[str],
    crowdhuman_results: Optional[Mapping[str, dict]] = None,
    coco_result: Optional[Mapping[str, float]] = None,
    settings: Optional[Mapping[str, object]] = None,
) -> dict:
    """The metrics.json document: {"map", "per_class": {name: {"ap", "num_annotations",
    "num_detections", "precision", "recall"}}, "crowdhuman": {name: {"ap", "mr" (a fraction),
    "ji", "ji_score_threshold", "num_annotations"}}, "coco": {...}, "settings": {...}}.

    "crowdhuman" and "coco" appear only when given; "settings" holds the VOC thresholds, the
    CrowdHuman score threshold (None: every detection) and whatever the caller adds (model,
    data, flags).
    """
    document = {
        "map": voc_result["map"],
        "per_class": {
            _class_name(class_names, label): {
                key: result[key] for key in ("ap", "num_annotations", "num_detections", "precision", "recall")
            }
            for label, result in voc_result["per_class"].items()
        },
    }
    all_settings = {
        "iou_threshold": voc_result["iou_threshold"],
        "score_threshold": voc_result["score_threshold"],
        "num_images": voc_result["num_images"],
    }
    if crowdhuman_results:
        document["crowdhuman"] = {
            name: {
                "ap": result["ap"],
                "mr": result["mr"],
                "ji": result["ji"],
                # 0.7 rather than the float 0.7000000000000001 that the threshold really is.
                "ji_score_threshold": round(result["ji_score_threshold"], 1),
                "num_annotations": result["num_annotations"],
            }
            for name, result in crowdhuman_results.items()
        }
        any_result = next(iter(crowdhuman_results.values()))
        all_settings["crowdhuman_score_threshold"] = any_result["score_threshold"]
    if coco_result:
        document["coco"] = dict(coco_result)
    all_settings.update(settings or {})
    document["settings"] = all_settings
    return document


def _file_stems(class_names: Sequence[str], labels: Sequence[int]) -> "list[str]":
    """Safe, distinct file stems: the class name with odd characters replaced, plus the index on clashes."""
    stems = [re.sub(r"[^A-Za-z0-9._-]+", "_", _class_name(class_names, label)) or "class" for label in labels]
    return [stem if stems.count(stem) == 1 else f"{stem}_{label}" for stem, label in zip(stems, labels)]


def plot_pr_curves(voc_result: dict, class_names: Sequence[str], output_dir: PathLike) -> "list[Path]":
    """One PNG per class, ``<output_dir>/<class>_precision_recall.png``, written atomically.

    Each shows the precision-recall curve, its envelope (the precision that AP integrates)
    and the AP. Returns the paths in class order.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = list(voc_result["per_class"])
    output_dir = Path(output_dir)
    paths = []
    for label, stem in zip(labels, _file_stems(class_names, labels)):
        result = voc_result["per_class"][label]
        recall, precision, envelope = (
            result["recall_curve"],
            result["precision_curve"],
            result["envelope_curve"],
        )
        figure = Figure(figsize=(6, 5), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        if len(recall):
            axes.plot(recall, precision, color="tab:blue", linewidth=1.2, label="precision")
            # The envelope value at recall_k holds on (recall_{k-1}, recall_k]: a "pre" step from recall 0.
            axes.step(
                np.r_[0.0, recall],
                np.r_[envelope[:1], envelope],
                where="pre",
                color="tab:orange",
                linewidth=1.0,
                label="envelope (AP)",
            )
            axes.legend(loc="lower left")
        else:
            axes.text(0.5, 0.5, "no detections", ha="center", va="center", transform=axes.transAxes)
        axes.set(
            xlim=(0, 1),
            ylim=(0, 1.02),
            xlabel="recall",
            ylabel="precision",
            title=f"{_class_name(class_names, label)}: AP {result['ap']:.4f}, "
            f"{result['num_annotations']} annotations",
        )
        axes.grid(True, alpha=0.3)
        path = output_dir / f"{stem}_precision_recall.png"
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png")
        paths.append(path)
    return paths
