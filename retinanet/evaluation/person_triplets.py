"""Person-triplet detections scored against an odgt file: each box kind, body-head pairs, overlapped people.

A person-triplet detection is one person with a score and three boxes; per image the detections are
{"boxes" (D, 4) full body, "visible_boxes" (D, 4), "head_boxes" (D, 4), "scores" (D,), "labels" (D,)}
(``DETECTION_KEYS``), x1y1x2y2 in original pixels. They are scored with the official-exact code of
``evaluation.crowdhuman``:

- full body, visible body, head: AP, MR^-2 and JI, each box kind on its own against the odgt's
  ``fbox``, ``vbox`` or ``hbox`` with the official ignore rules (``odgt_ground_truth``). A model
  whose heads are also a class of their own (``head_class``) is scored on those head detections,
  as a plain model's head class is; the persons' head boxes are then scored too ("person_head");
- body-head pairs: AP and MR^-2 where a detection matches a person only when its full body and its
  head both reach IoU > 0.5 with that person's (``evaluate_crowdhuman_pairs``);
- the recall of people whose full body overlaps another person's at IoU > 0.5, and their full-body
  AP and MR^-2 with everyone else ignored (``crowd_overlaps.overlapped_recall``); the recall of everyone.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from retinanet.data.crowdhuman import BODY_CLASS, HEAD_CLASS, read_odgt
from retinanet.evaluation.crowd_overlaps import overlapped_recall
from retinanet.evaluation.crowdhuman import evaluate_crowdhuman, evaluate_crowdhuman_pairs, pair_ground_truth
from retinanet.evaluation.odgt_ground_truth import read_odgt_ground_truth

PERSON_BOX_KINDS = ("full", "visible", "head")
# Where each box kind is in a detection record (retinanet.postprocess.TRIPLET_BOX_KEYS, tested equal).
DETECTION_KEYS = {"full": "boxes", "visible": "visible_boxes", "head": "head_boxes"}


@dataclass(frozen=True)
class PeopleGroundTruth:
    """An odgt file read for every box kind, in file order.

    image_ids (I,), sources (I,) ``path:line``; kinds: box kind -> per image {boxes, labels (all 0),
    ignore, ignore_labels} of that kind (not clipped); pairs: per image ``pair_ground_truth``;
    image_sizes (I,): (H, W) from the record, else None.
    """

    image_ids: "list[str]"
    sources: "list[str]"
    kinds: "Dict[str, List[dict]]"
    pairs: "List[dict]"
    image_sizes: "list[Optional[tuple[int, int]]]"


def read_people_ground_truth(odgt_path: str) -> PeopleGroundTruth:
    """Every image of ``odgt_path`` with its people's full, visible and head boxes and their pairs.

    Any problem is a UserError naming the file and line (``read_odgt_ground_truth``).
    """
    records = read_odgt(odgt_path)
    kinds = {kind: read_odgt_ground_truth(odgt_path, [HEAD_CLASS if kind == "head" else BODY_CLASS], kind, records)
             for kind in PERSON_BOX_KINDS}
    full = kinds["full"]
    # read_odgt_ground_truth has checked every gtbox's fbox and hbox, which the pairs read.
    pairs = [pair_ground_truth(record) for _, record in records]
    return PeopleGroundTruth(full.image_ids, full.sources, {kind: truth.annotations for kind, truth in kinds.items()},
                             pairs, full.image_sizes)


def kind_detections(detections: Sequence[dict], key: str = "boxes", label: Optional[int] = None) -> "list[dict]":
    """Per image {boxes, scores, labels (0)} of one box kind: the ``key`` boxes of every detection, or of
    those labelled ``label`` (a plain model's person or head class)."""
    selected = []
    for record in detections:
        keep = np.ones(len(record["scores"]), dtype=bool) if label is None else np.asarray(record["labels"]) == label
        selected.append({"boxes": np.asarray(record[key]).reshape(-1, 4)[keep],
                         "scores": np.asarray(record["scores"])[keep], "labels": np.zeros(int(keep.sum()), np.int64)})
    return selected


def evaluate_box_kind(detections: Sequence[dict], truth: PeopleGroundTruth, kind: str,
                      image_sizes: Sequence["tuple[int, int]"]) -> dict:
    """``evaluate_crowdhuman`` of one box kind; detections as ``kind_detections`` returns them."""
    return evaluate_crowdhuman(detections, truth.kinds[kind], 0, image_sizes)


def evaluate_person_triplets(detections: Sequence[dict], truth: PeopleGroundTruth,
                             image_sizes: Sequence["tuple[int, int]"], head_class: Optional[int] = None) -> dict:
    """Every score of the module docstring: {"full", "visible", "head": evaluate_crowdhuman results,
    "pairs": evaluate_crowdhuman_pairs result, "overlapped": overlapped_recall result}, and with
    ``head_class`` also "person_head".

    detections: per image (I,) a triplet record; image_sizes: (I,) (H, W). head_class: the label of
    the heads detected on their own (the persons are label 0); None: every detection is a person.
    """
    person = None if head_class is None else 0
    people = [_selected(record, person) for record in detections]
    results = {kind: evaluate_box_kind(kind_detections(people, DETECTION_KEYS[kind]), truth, kind, image_sizes)
               for kind in PERSON_BOX_KINDS}
    if head_class is not None:
        results["person_head"] = results["head"]
        results["head"] = evaluate_box_kind(kind_detections(detections, label=head_class), truth, "head", image_sizes)
    pair_detections = [{"bodies": record["boxes"], "heads": record["head_boxes"], "scores": record["scores"]}
                       for record in people]
    results["pairs"] = evaluate_crowdhuman_pairs(pair_detections, truth.pairs, image_sizes)
    results["overlapped"] = overlapped_recall(kind_detections(people), truth.kinds["full"], image_sizes)
    return results


def detected_head_class(detections: Sequence[dict], class_names: Sequence[str]) -> Optional[int]:
    """The label of heads detected on their own among triplet detections: the index of ``head`` in
    ``class_names`` when some detection has it (a triplet model with a head class), else None."""
    if HEAD_CLASS not in class_names:
        return None
    label = list(class_names).index(HEAD_CLASS)
    return label if any((np.asarray(record["labels"]) == label).any() for record in detections) else None


def _selected(record: dict, label: Optional[int]) -> dict:
    """The detections of a record labelled ``label`` (all of them for None), every key alike."""
    if label is None:
        return record
    keep = np.asarray(record["labels"]) == label
    return {key: np.asarray(value)[keep] for key, value in record.items()}


def format_person_triplets(results: dict) -> str:
    """A small table: AP, MR^-2 and JI per box kind, the pair protocol, and the overlapped-people recall."""
    lines = ["person triplets (CrowdHuman protocol)      AP   MR^-2      JI   #annot"]
    names = {"full": "full body", "visible": "visible body", "head": "head",
             "person_head": "head (of the person detections)"}
    if "person_head" in results:
        names["head"] = "head (head class)"
    for kind in (*PERSON_BOX_KINDS, "person_head"):
        if kind not in results:
            continue
        r = results[kind]
        lines.append(f"  {names[kind]:<38}{r['ap']:6.4f}  {r['mr']:6.4f}  {r['ji']:6.4f}  {r['num_annotations']:7d}")
    pairs = results["pairs"]
    lines.append(f"  {'body-head pairs (both IoU > 0.5)':<38}{pairs['ap']:6.4f}  {pairs['mr']:6.4f}       -  "
                 f"{pairs['num_annotations']:7d}")
    overlapped = results["overlapped"]
    lines.append(f"people overlapped at full-body IoU > 0.5 ({overlapped['num_overlapped']}): recall "
                 f"{overlapped['overlapped_recall']:.4f}, AP {overlapped['overlapped_ap']:.4f}, MR^-2 "
                 f"{overlapped['overlapped_mr']:.4f} (the others ignored); recall of everyone: "
                 f"{overlapped['recall']:.4f}")
    return "\n".join(lines)


def metrics_document(results: dict) -> dict:
    """The JSON-ready numbers of ``evaluate_person_triplets`` (no curves); a plain model's partial
    results (some kinds only) give those kinds."""
    keys = {"pairs": ("ap", "mr", "num_annotations", "num_detections"),
            "overlapped": ("overlapped_recall", "num_overlapped", "recall", "num_people", "overlapped_ap",
                           "overlapped_mr")}
    document = {}
    for name in (*PERSON_BOX_KINDS, "person_head", "pairs", "overlapped"):
        if name in results:
            wanted = keys.get(name, ("ap", "mr", "ji", "ji_score_threshold", "num_annotations", "num_detections"))
            document[name] = {key: _plain_number(results[name][key]) for key in wanted}
    return document


def _plain_number(value):
    return float(value) if isinstance(value, (float, np.floating)) else int(value)
