"""Evaluation: VOC AP, the CrowdHuman protocol (AP, MR^-2, JI), COCO AP, saved detections, reports.

Data contract, per image: detections {boxes (D, 4) x1y1x2y2 float in original pixels,
scores (D,), labels (D,) int64 class index}; ground truth {boxes (N, 4), labels (N,),
ignore (M, 4), ignore_labels (M,)} with ignore label -1 meaning every class.
"""

from retinanet.evaluation.coco import (
    COCO_METRIC_NAMES,
    coco_ground_truth,
    detections_to_coco_results,
    evaluate_coco,
    write_coco_results,
    write_detections_as_coco_results,
)
from retinanet.evaluation.crowdhuman import evaluate_crowdhuman
from retinanet.evaluation.detection_files import read_detections, write_detections_jsonl
from retinanet.evaluation.report import build_metrics_json, format_summary, plot_pr_curves
from retinanet.evaluation.voc import evaluate_voc, voc_at_score_threshold

__all__ = [
    "COCO_METRIC_NAMES",
    "build_metrics_json",
    "coco_ground_truth",
    "detections_to_coco_results",
    "evaluate_coco",
    "evaluate_crowdhuman",
    "evaluate_voc",
    "format_summary",
    "plot_pr_curves",
    "read_detections",
    "voc_at_score_threshold",
    "write_coco_results",
    "write_detections_as_coco_results",
    "write_detections_jsonl",
]
