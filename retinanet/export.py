"""RetinaNet as one graph (ONNX, TorchScript) with its post-processing inside, and the parity check.

The exported graph takes the network input exactly as ``retinanet.data`` prepares it and returns
NMS-filtered detections; resizing, normalising and padding stay outside (``preprocessing`` in the
ONNX metadata says how). Inputs:

- ``images``: (B, 3, H, W) float32, RGB / 255 normalised with ImageNet mean/std, H and W multiples
  of 32 (pad bottom/right with zeros). B, H and W are dynamic.
- ``score_threshold``: () float32, keep detections scoring above it (0.05 reproduces the model).

Outputs, one row per detection of the whole batch, grouped by image and by descending score
within an image:

- ``boxes``: (D, 4) float32 x1y1x2y2 in pixels of ``images``, clipped to (W, H); divide by the
  resize scale to return to the original image. A person-triplet model's are (D, 12): each
  person's full body, visible body and head in columns 0-3, 4-7 and 8-11 (metadata ``boxes``).
- ``scores``: (D,) float32; ``labels``: (D,) int64 class index; ``batch_index``: (D,) int64.
"""
import contextlib
import json
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torchvision.ops import box_iou

from retinanet.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from retinanet.errors import UserError
from retinanet.io_utils import atomic_path
from retinanet.model import PERSON_BOX_KINDS, RetinaNet
from retinanet.postprocess import TRIPLET_BOX_KEYS, split_by_image

ONNX_OPSET = 17
INPUT_NAMES = ["images", "score_threshold"]
OUTPUT_NAMES = ["boxes", "scores", "labels", "batch_index"]
DYNAMIC_AXES = {
    "images": {0: "batch", 2: "height", 3: "width"},
    "boxes": {0: "detections"},
    "scores": {0: "detections"},
    "labels": {0: "detections"},
    "batch_index": {0: "detections"},
}
# onnxruntime and PyTorch run the same float32 convolutions with different kernels: on the ResNet
# backbones the head outputs differ by ~1e-5 relative, i.e. ~1e-3 px on boxes of a few hundred pixels.
BOX_TOLERANCE_PX = 0.05
SCORE_TOLERANCE = 1e-4
# A candidate tied (within float rounding) with the last one kept by a level's top-k may be kept on
# one side only; the outputs cannot show that, so a check tolerates 1% unexplained detections.
MAX_UNEXPLAINED_FRACTION = 0.01


class ExportableRetinaNet(nn.Module):
    """The detector's own ``flat_detections`` with the score threshold as a graph input.

    Tracing records the model's methods as they run (``features``, ``head_outputs``, ``anchors``
    and ``retinanet.postprocess.flat_detections``, written to keep batch and image size dynamic).
    The one difference from eager inference: NMS sees every candidate, because eager's "best
    4 x max_detections candidates, more if needed" is a data-dependent loop; both give the same
    detections.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()

    def forward(self, images: torch.Tensor, score_threshold: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """images (B, 3, H, W), score_threshold () -> boxes (D, 4) (person triplets: (D, 12)), scores (D,),
        labels (D,), batch_index (D,)."""
        return self.model.flat_detections(images, score_threshold, candidates_per_detection=None)


def graph_outputs_by_image(outputs: Sequence, batch_size: int) -> List[Dict[str, np.ndarray]]:
    """Flat graph outputs (boxes, scores, labels, batch_index), grouped by image -> per image
    {"boxes", "scores", "labels"} as numpy arrays (person triplets: also "visible_boxes", "head_boxes").
    Accepts tensors (TorchScript, eager) or numpy arrays (onnxruntime)."""
    tensors = [torch.as_tensor(output).detach().cpu() for output in outputs]
    return [{key: value.numpy() for key, value in image.items()}
            for image in split_by_image(*tensors, batch_size=batch_size)]


def box_layout(model: RetinaNet) -> str:
    """What the graph's boxes hold, for the ONNX metadata."""
    if not model.person_triplets:
        return "x1y1x2y2"
    layout = ("person triplets: full, visible, head x1y1x2y2 in columns 0-3, 4-7, 8-11; NMS on the "
              f"{model.suppression_box} box")
    if model.head_class is not None:
        layout += (f"; label {model.head_class} is a head detected on its own, its box in all three; a person's "
                   "head is the head detection maximising IoU with its regressed head x head score")
    return layout


def compare_detections(
    reference: Dict[str, np.ndarray],
    candidate: Dict[str, np.ndarray],
    score_threshold: float,
    nms_iou_threshold: float,
    max_detections: int,
    suppression_key: str = "boxes",
) -> Dict[str, object]:
    """Match two detection sets of one image by label, box (BOX_TOLERANCE_PX) and score (SCORE_TOLERANCE).

    reference, candidate: {"boxes": (N, 4), "scores": (N,), "labels": (N,)}, and a person triplet's
    "visible_boxes" and "head_boxes" (all three must agree); suppression_key: the boxes NMS compared. Matching is by set
    because near-tied scores may swap order. A detection without a partner counts as a near tie
    (not a failure) when score differences inside the tolerance explain it:
    - NMS kept the other one of two overlapping same-class boxes scoring within the tolerance;
    - its score is within the tolerance of the score threshold, or of the lowest score of a side
      that holds ``max_detections``;
    - it overlaps (same class, IoU above the NMS threshold) an explained detection of the other
      side, which suppressed it there or whose absence let it survive: the NMS cascade of a tie.
    Returns counts, unexplained unmatched detections per side, near ties, and the largest box and
    score differences between matched detections.
    """
    # Every box of a detection (a person triplet's three) must agree; NMS compared the suppression box.
    keys = [key for key in TRIPLET_BOX_KEYS if key in reference]
    ref_boxes = np.concatenate([reference[key] for key in keys], axis=1).astype(np.float64)  # (N, 4 S)
    cand_boxes = np.concatenate([candidate[key] for key in keys], axis=1).astype(np.float64)  # (M, 4 S)
    ref_scores, cand_scores = reference["scores"].astype(np.float64), candidate["scores"].astype(np.float64)
    box_diff = np.abs(ref_boxes[:, None, :] - cand_boxes[None, :, :]).max(axis=2, initial=0.0)  # (N, M)
    score_diff = np.abs(ref_scores[:, None] - cand_scores[None, :])  # (N, M)
    same_label = reference["labels"][:, None] == candidate["labels"][None, :]
    matches = same_label & (score_diff <= SCORE_TOLERANCE) & (box_diff <= BOX_TOLERANCE_PX)
    nms_ref = torch.from_numpy(reference[suppression_key].astype(np.float64))
    nms_cand = torch.from_numpy(candidate[suppression_key].astype(np.float64))
    overlapping = same_label & (box_iou(nms_ref, nms_cand).numpy() > nms_iou_threshold)  # (N, M)
    swapped = overlapping & (score_diff <= SCORE_TOLERANCE)

    def at_a_cutoff(scores: np.ndarray, other_scores: np.ndarray) -> np.ndarray:
        near_threshold = scores - score_threshold <= SCORE_TOLERANCE
        other_capped = len(other_scores) >= max_detections
        near_cut = np.abs(scores - other_scores.min(initial=np.inf)) <= SCORE_TOLERANCE
        return near_threshold | (other_capped & near_cut)

    unmatched_ref, unmatched_cand = ~matches.any(axis=1), ~matches.any(axis=0)
    explained_ref = unmatched_ref & (swapped.any(axis=1) | at_a_cutoff(ref_scores, cand_scores))
    explained_cand = unmatched_cand & (swapped.any(axis=0) | at_a_cutoff(cand_scores, ref_scores))
    while True:  # follow the cascade until nothing new is explained (at most N + M rounds)
        grown_ref = explained_ref | (unmatched_ref & overlapping[:, explained_cand].any(axis=1))
        grown_cand = explained_cand | (unmatched_cand & overlapping[explained_ref, :].any(axis=0))
        if (grown_ref == explained_ref).all() and (grown_cand == explained_cand).all():
            break
        explained_ref, explained_cand = grown_ref, grown_cand
    return {
        "reference": len(ref_scores),
        "candidate": len(cand_scores),
        "unmatched_reference": int((unmatched_ref & ~explained_ref).sum()),
        "unmatched_candidate": int((unmatched_cand & ~explained_cand).sum()),
        "near_ties": int(explained_ref.sum() + explained_cand.sum()),
        "max_box_diff": float(np.where(matches, box_diff, 0.0).max(initial=0.0)),
        "max_score_diff": float(np.where(matches, score_diff, 0.0).max(initial=0.0)),
    }


def preprocessing_note(min_side: int, max_side: int) -> str:
    """How to prepare ``images`` for the graph (stored in the ONNX metadata)."""
    return (f"RGB / 255, mean {list(IMAGENET_MEAN)}, std {list(IMAGENET_STD)}; resize so the short side "
            f"is {min_side} unless the long side would pass {max_side}; zero-pad bottom/right to multiples "
            "of 32; divide output boxes by the resize scale")


@contextlib.contextmanager
def _expected_warnings():
    """Silence the warnings this export raises by design, and only those.

    torch.jit's deprecation notices: the ONNX exporter that runs without onnxscript traces with
    torch.jit, and torchvision scripts its batched NMS under tracing. The exporter's caution that
    negative indices break advanced indexing: every index here comes from nonzero, topk or
    argsort and is never negative.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*deprecated")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*legacy TorchScript-based ONNX")
        warnings.filterwarnings("ignore", message=r"Exporting aten::index operator of advanced indexing")
        # torchvision's batched_nms compares the traced box count before it asks whether it is tracing,
        # then takes its tracing branch all the same.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"torchvision\.ops\.boxes")
        yield


def _threshold(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float32)


def _exportable(model: nn.Module) -> None:
    """A model whose post-processing a traced graph can hold, else a UserError saying what to do."""
    if getattr(model, "suppression_box", None) == "paired":
        raise UserError("paired suppression settles each image's people block by block, in a loop whose length "
                        "depends on the image, which a traced graph would fix to the sample's: export with "
                        "--suppression_box full, visible or head")
    if getattr(model, "instances_per_anchor", 1) > 1:
        raise UserError("a model with two predictions per anchor keeps them apart by Set NMS, a greedy loop whose "
                        "length depends on the image, which a traced graph would fix to the sample's: it is not "
                        "exported (detect.py and csv_validation.py run it)")


def _sample_input(sample_size: Tuple[int, int]) -> torch.Tensor:
    if sample_size[0] % 32 or sample_size[1] % 32 or min(sample_size) <= 0:
        raise UserError(f"sample size {tuple(sample_size)} must be positive multiples of 32")
    return torch.zeros(2, 3, *sample_size)


def export_onnx(
    model: nn.Module,
    path: str,
    class_names: Sequence[str],
    sample_size: Tuple[int, int] = (320, 320),
    opset: int = ONNX_OPSET,
    preprocessing: str = "",
    verify: Optional[Callable[[str], None]] = None,
) -> None:
    """Trace ``model`` (eval mode, CPU) with its post-processing into an ONNX file, written atomically.

    sample_size: (H, W) of the tracing input, multiples of 32; the graph accepts any batch and size.
    Class names (JSON list), thresholds and ``preprocessing`` go into the file's metadata.
    verify: called with the finished temporary file before it is renamed to ``path``; raising
    there leaves no file behind.
    """
    _exportable(model)
    import onnx

    if opset < ONNX_OPSET:
        raise UserError(f"opset {opset}: the export needs ONNX opset {ONNX_OPSET} or newer")
    sample = _sample_input(sample_size)
    wrapper = ExportableRetinaNet(model).eval()
    with atomic_path(path) as tmp, torch.no_grad(), _expected_warnings():
        torch.onnx.export(
            wrapper,
            (sample, _threshold(model.score_threshold)),
            str(tmp),
            dynamo=False,  # the torch.export-based exporter needs onnxscript and has no NMS translation
            opset_version=opset,
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes=DYNAMIC_AXES,
        )
        graph = onnx.load(str(tmp))
        onnx.helper.set_model_props(graph, {
            "class_names": json.dumps(list(class_names)),
            "preprocessing": preprocessing,
            "default_score_threshold": str(model.score_threshold),
            "nms_iou_threshold": str(model.nms_iou_threshold),
            "max_detections_per_image": str(model.max_detections),
            "boxes": box_layout(model),
        })
        onnx.checker.check_model(graph)
        onnx.save(graph, str(tmp))
        if verify is not None:
            verify(str(tmp))


def export_torchscript(
    model: nn.Module,
    path: str,
    sample_size: Tuple[int, int] = (320, 320),
    verify: Optional[Callable[[str], None]] = None,
) -> None:
    """Trace the same wrapper to TorchScript (``torch.jit.load`` it after ``import torchvision``, for NMS).

    PyTorch marks torch.jit deprecated: the format is offered for existing TorchScript
    deployments, the ONNX file is the primary export.
    """
    _exportable(model)
    sample = _sample_input(sample_size)
    wrapper = ExportableRetinaNet(model).eval()
    with atomic_path(path) as tmp, torch.no_grad(), _expected_warnings():
        traced = torch.jit.trace(wrapper, (sample, _threshold(model.score_threshold)), check_trace=False)
        torch.jit.save(traced, str(tmp))
        if verify is not None:
            verify(str(tmp))


Runner = Callable[[np.ndarray, float], List[Dict[str, np.ndarray]]]


def onnx_runner(path: str) -> Runner:
    """images (B, 3, H, W) float32, score threshold -> per image detections, from onnxruntime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(images: np.ndarray, score_threshold: float) -> List[Dict[str, np.ndarray]]:
        feed = {"images": images, "score_threshold": np.array(score_threshold, np.float32)}
        return graph_outputs_by_image(session.run(OUTPUT_NAMES, feed), images.shape[0])

    return run


def torchscript_runner(path: str) -> Runner:
    """Like ``onnx_runner``, for a TorchScript file."""
    with _expected_warnings():
        module = torch.jit.load(str(path), map_location="cpu")

    @torch.no_grad()
    def run(images: np.ndarray, score_threshold: float) -> List[Dict[str, np.ndarray]]:
        # The profiling executor spends seconds optimising the first calls, which a check never amortises.
        with torch.jit.optimized_execution(False):
            outputs = module(torch.from_numpy(images), _threshold(score_threshold))
        return graph_outputs_by_image(outputs, images.shape[0])

    return run


@torch.no_grad()
def reference_detections(
    model: nn.Module, images: torch.Tensor, score_threshold: float
) -> List[Dict[str, np.ndarray]]:
    """The PyTorch model's own detections (clipped to the padded size) at ``score_threshold``, as numpy.

    images: (B, 3, H, W) on any device; they run on the model's.
    """
    saved = model.score_threshold
    model.score_threshold = score_threshold
    try:
        outputs = model(images.to(next(model.parameters()).device))
    finally:
        model.score_threshold = saved
    return [{key: value.cpu().numpy() for key, value in output.items()} for output in outputs]


def check_parity(
    model: nn.Module,
    runner: Runner,
    input_sizes: Sequence[Tuple[int, int, int]],
    score_thresholds: Sequence[float],
    seed: int = 0,
) -> List[Dict[str, object]]:
    """Run the PyTorch model and an exported one on the same random inputs; compare image by image.

    input_sizes: (B, H, W) per trial, so batch and image size can differ from the traced sample.
    Returns one row per (trial, threshold, image): ``compare_detections`` plus input and threshold.
    """
    generator = torch.Generator().manual_seed(seed)
    suppression_key = "boxes"
    if model.person_triplets:
        suppression_key = TRIPLET_BOX_KEYS[PERSON_BOX_KINDS.index(model.suppression_box)]
    rows = []
    for batch_size, height, width in input_sizes:
        images = torch.randn(batch_size, 3, height, width, generator=generator)
        for threshold in score_thresholds:
            expected = reference_detections(model, images, threshold)
            got = runner(images.numpy(), threshold)
            for index, (ref, cand) in enumerate(zip(expected, got)):
                comparison = compare_detections(
                    ref, cand, threshold, model.nms_iou_threshold, model.max_detections, suppression_key)
                rows.append({"input": f"{batch_size}x3x{height}x{width}", "image": index,
                             "score_threshold": threshold, **comparison})
    return rows


def parity_ok(rows: Sequence[Dict[str, object]]) -> bool:
    """At most MAX_UNEXPLAINED_FRACTION of the reference detections without an explained partner."""
    unexplained = sum(row["unmatched_reference"] + row["unmatched_candidate"] for row in rows)
    return unexplained <= MAX_UNEXPLAINED_FRACTION * sum(row["reference"] for row in rows)


def format_parity_table(rows: Sequence[Dict[str, object]], candidate: str) -> str:
    """The comparison as a text table: detection counts, unmatched detections, largest differences."""
    lines = [f"{'input':>14} {'image':>5} {'thresh':>6} {'torch':>6} {candidate:>11} {'unmatched':>9} "
             f"{'near ties':>9} {'max|dbox| px':>12} {'max|dscore|':>11}"]
    for row in rows:
        unmatched = row["unmatched_reference"] + row["unmatched_candidate"]
        lines.append(
            f"{row['input']:>14} {row['image']:>5} {row['score_threshold']:>6.2f} {row['reference']:>6} "
            f"{row['candidate']:>11} {unmatched:>9} {row['near_ties']:>9} {row['max_box_diff']:>12.2e} "
            f"{row['max_score_diff']:>11.2e}"
        )
    lines.append(f"tolerance: boxes {BOX_TOLERANCE_PX} px, scores {SCORE_TOLERANCE}; detections matched by "
                 "label, box and score; near ties: kept on one side only because of a score difference "
                 f"within the tolerance; unmatched allowed: {MAX_UNEXPLAINED_FRACTION:.0%} of the detections")
    return "\n".join(lines)


def check_sizes(sample_size: Tuple[int, int]) -> List[Tuple[int, int, int]]:
    """Trial inputs (B, H, W) that differ from the traced (2, H, W) in batch size, height and width."""
    height, width = sample_size
    return [(1, height, width), (3, height + 64, max(width - 64, 64))]
